// An HTTP client for the server's end-to-end tests (cpp-httplib): a POST or GET to 127.0.0.1 and
// the text of a completion's first choice.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

namespace gemmapod {

struct Reply {
  int status = 0;
  std::string body;
};

inline Reply Post(int port, const std::string& path, const std::string& body,
                  const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(120, 0);
  auto r = client.Post(path.c_str(), headers, body, "application/json");
  if (!r) return {-1, httplib::to_string(r.error())};
  return {r->status, r->body};
}

inline Reply Get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  auto r = client.Get(path.c_str());
  if (!r) return {-1, httplib::to_string(r.error())};
  return {r->status, r->body};
}

// The text of choice 0 of a completion or chat completion.
inline std::string TextOf(const std::string& body) {
  const nlohmann::json j = nlohmann::json::parse(body);
  const nlohmann::json& c = j.at("choices").at(0);
  return c.contains("message") ? c["message"]["content"].get<std::string>()
                               : c["text"].get<std::string>();
}

}  // namespace gemmapod
