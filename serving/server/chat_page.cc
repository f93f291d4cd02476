#include "serving/server/chat_page.h"

namespace gemmapod {

std::string_view ChatPageHtml() {
  // The script keeps the conversation in the page; each send posts all of it (the server keeps
  // no sessions). The answer element carries data-state="streaming" until the stream's end,
  // then "done" (or "error"), which the browser test waits for.
  static constexpr std::string_view kPage = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gemmapod</title>
<style>
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; background: #f6f7f9; color: #1b1d21;
         display: flex; flex-direction: column; height: 100vh; }
  header { padding: 10px 16px; background: #1b1d21; color: #fff; display: flex; gap: 12px;
           align-items: baseline; }
  header b { font-size: 16px; }
  header span { color: #aab; font-size: 13px; }
  #log { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column; gap: 10px; }
  .msg { max-width: 780px; padding: 10px 14px; border-radius: 10px; white-space: pre-wrap;
         word-wrap: break-word; }
  .user { align-self: flex-end; background: #dbe8ff; }
  .assistant { align-self: flex-start; background: #fff; border: 1px solid #e1e4ea; }
  .assistant[data-state="streaming"]::after { content: "\2589"; color: #889; }
  .error { align-self: center; background: #ffe3e3; color: #8a1c1c; }
  .stats { font-size: 12px; color: #778; align-self: flex-start; margin-top: -6px; }
  form { display: flex; gap: 8px; padding: 12px 16px; background: #fff; border-top: 1px solid #e1e4ea; }
  textarea { flex: 1; resize: none; height: 48px; padding: 8px; font: inherit; border: 1px solid #c9ced8;
             border-radius: 8px; }
  button { padding: 0 16px; border: 0; border-radius: 8px; background: #2f6fed; color: #fff; font: inherit; }
  button:disabled { background: #a9b6cf; }
  #stop { background: #6b7280; }
  #stop:disabled { background: #c4c8cf; }
  details { padding: 0 16px 12px; background: #fff; font-size: 13px; }
  details label { margin-right: 14px; }
  details input { width: 80px; }
  details textarea { width: 100%; height: 40px; margin-top: 6px; }
</style>
</head>
<body>
<header><b>gemmapod</b><span id="model">loading...</span></header>
<div id="log"></div>
<form id="form">
  <textarea id="input" placeholder="Message (Enter sends, Shift+Enter is a new line)"></textarea>
  <button id="send" type="submit">Send</button>
  <button id="stop" type="button" disabled>Stop</button>
</form>
<details id="settings">
  <summary>Settings</summary>
  <label>temperature <input id="temperature" type="number" step="0.1" min="0" max="2" value="0.7"></label>
  <label>max tokens <input id="max_tokens" type="number" min="1" value="512"></label>
  <label>API key <input id="key" type="password" style="width:160px"></label>
  <button id="clear" type="button">New chat</button>
  <textarea id="system" placeholder="System text (folded into the first user turn)"></textarea>
</details>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const messages = [];
let controller = null;
$("key").value = localStorage.getItem("gemmapod-key") || "";
$("key").onchange = () => localStorage.setItem("gemmapod-key", $("key").value);

function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}

function add(kind, text) {
  const div = document.createElement("div");
  div.className = "msg " + kind;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

fetch("/v1/models", {headers: headers()}).then((r) => r.json()).then((j) => {
  $("model").textContent = j.data[0].id + " \u00b7 " + j.data[0].max_model_len + " tokens of context";
}).catch(() => { $("model").textContent = "model unavailable"; });

$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("stop").onclick = () => { if (controller) controller.abort(); };
$("clear").onclick = () => { messages.length = 0; $("log").textContent = ""; };

$("form").onsubmit = async (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  add("user", text);
  messages.push({role: "user", content: text});
  const answer = add("assistant", "");
  answer.dataset.state = "streaming";
  const body = {
    messages: ($("system").value ? [{role: "system", content: $("system").value}] : []).concat(messages),
    stream: true,
    stream_options: {include_usage: true},
    temperature: Number($("temperature").value),
    max_tokens: Number($("max_tokens").value),
  };
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const start = performance.now();
  let first = 0, reply = "", usage = null, failure = null;
  try {
    const res = await fetch("/v1/chat/completions",
                            {method: "POST", headers: headers(), body: JSON.stringify(body),
                             signal: controller.signal});
    if (!res.ok) {
      const j = await res.json().catch(() => ({}));
      throw new Error((j.error && j.error.message) || ("HTTP " + res.status));
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let at;
      while ((at = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        if (!event.startsWith("data: ")) continue;  // ": waiting" comments keep the line alive
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        if (j.usage) usage = j.usage;
        const delta = j.choices.length ? j.choices[0].delta.content : null;
        if (delta) {
          if (!first) first = performance.now();
          reply += delta;
          answer.textContent = reply;
          $("log").scrollTop = $("log").scrollHeight;
        }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") failure = err.message;
  }
  controller = null;
  $("send").disabled = false;
  $("stop").disabled = true;
  if (failure) {
    answer.dataset.state = "error";
    add("error", failure);
    messages.pop();
    return;
  }
  messages.push({role: "assistant", content: reply});
  answer.dataset.state = "done";
  if (usage && first) {
    const seconds = (performance.now() - first) / 1000;
    const rate = usage.completion_tokens > 1 ? (usage.completion_tokens - 1) / seconds : 0;
    add("stats", usage.completion_tokens + " tokens, first after " +
        ((first - start) / 1000).toFixed(2) + " s, " + rate.toFixed(1) + " tokens/s");
  }
};
</script>
</body>
</html>
)html";
  return kPage;
}

}  // namespace gemmapod
