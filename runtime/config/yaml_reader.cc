#include "runtime/config/yaml_reader.h"

#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string_view>

#include "runtime/error.h"

namespace gemmapod {

namespace {

// yaml-cpp marks are 0-based and null for nodes it synthesised; those take the parent's place.
SourcePosition PositionOf(const YAML::Mark& mark, SourcePosition fallback) {
  if (mark.is_null() || mark.line < 0 || mark.column < 0) return fallback;
  return {mark.line + 1, mark.column + 1};
}

std::string JoinKey(const std::string& parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return parent + "." + std::string(key);
}

std::string JoinChoices(std::initializer_list<std::string_view> choices) {
  std::string out;
  for (std::string_view c : choices) {
    if (!out.empty()) out += ", ";
    out += c;
  }
  return out;
}

// Messages must stay on one line even when they quote a multi-line scalar.
std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

// A scalar as quoted in a message: one line, and short enough to keep the message readable.
std::string Quote(const std::string& scalar) {
  constexpr size_t kMaxQuoted = 60;
  std::string text = OneLine(scalar);
  if (text.size() > kMaxQuoted) text = text.substr(0, kMaxQuoted) + "...";
  return "'" + text + "'";
}

}  // namespace

void FailAt(const std::string& source, SourcePosition at, const std::string& key_path,
            const std::string& message) {
  std::string text = StrCat(source, ":", at.line, ":", at.column, ": ");
  if (!key_path.empty()) text += key_path + ": ";
  throw Error(text + OneLine(message));
}

std::string ReadConfigText(const std::string& path, const std::string& what) {
  constexpr off_t kMaxBytes = off_t{4} << 20;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    throw Error(StrCat(path, ": cannot read ", what, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    throw Error(StrCat(path, ": cannot read ", what, ": ",
                       S_ISDIR(st.st_mode) ? "it is a directory" : "not a regular file"));
  }
  if (st.st_size > kMaxBytes) {
    throw Error(StrCat(path, ": cannot read ", what, ": ", st.st_size,
                       " bytes is too large for a configuration file (limit 4 MiB)"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(StrCat(path, ": cannot read ", what, ": ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(StrCat(path, ": cannot read ", what, ": ", std::strerror(errno)));
  return text.str();
}

namespace {

// The line (1-based) where a second YAML document starts, or 0: a "---" line after content, or a
// second "---" line. yaml-cpp's LoadAll would tell, but it loops forever (memory growing) on
// some malformed streams (a file holding only ",", yaml-cpp 0.7), so documents are counted from
// the text and only the first is parsed.
int SecondDocumentLine(const std::string& text) {
  int line = 0, markers = 0;
  bool content = false;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find('\n', begin), text.size());
    const std::string_view row(text.data() + begin, end - begin);
    ++line;
    const bool marker = row.substr(0, 3) == "---" &&
                        (row.size() == 3 || row[3] == ' ' || row[3] == '\t' || row[3] == '\r');
    if (marker) {
      if (content || ++markers > 1) return line;
      content = row.find_first_not_of(" \t\r", 3) != std::string_view::npos;
    } else {
      const size_t first = row.find_first_not_of(" \t\r");
      if (first != std::string_view::npos && row[first] != '#' && row[first] != '%' &&
          row.substr(first, 3) != "...") {
        content = true;
      }
    }
    begin = end + 1;
  }
  return 0;
}

}  // namespace

YamlValue ParseYamlDocument(const std::string& text, const std::string& source) {
  if (const int line = SecondDocumentLine(text)) {
    FailAt(source, SourcePosition{line, 1}, "",
           "a second YAML document ('---'): put everything in one document");
  }
  YAML::Node document;
  try {
    document = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    const SourcePosition at =
        e.mark.is_null() ? SourcePosition{} : SourcePosition{e.mark.line + 1, e.mark.column + 1};
    FailAt(source, at, "", "YAML syntax error: " + e.msg);
  }
  // Text that parses to nothing (",") is malformed, not an empty file; a written null is a null.
  if (document.IsNull() && document.Tag() != "tag:yaml.org,2002:null") {
    for (size_t at = 0; at < text.size();) {
      const size_t end = std::min(text.find('\n', at), text.size());
      const std::string_view row(text.data() + at, end - at);
      const size_t first = row.find_first_not_of(" \t\r");
      if (first != std::string_view::npos && row[first] != '#' && row.substr(first) != "~" &&
          row.substr(first) != "null" && row.substr(first, 3) != "---" &&
          row.substr(first, 3) != "...") {
        FailAt(source, SourcePosition{}, "", "YAML syntax error: the text holds no YAML value");
      }
      at = end + 1;
    }
  }
  return YamlValue(document, source);
}

YamlValue::YamlValue(YAML::Node node, std::string source)
    : YamlValue(std::move(node), std::move(source), "", SourcePosition{}) {}

YamlValue::YamlValue(YAML::Node node, std::string source, std::string key_path,
                     SourcePosition fallback)
    : node_(std::move(node)),
      source_(std::move(source)),
      key_path_(std::move(key_path)),
      position_(PositionOf(node_.Mark(), fallback)) {}

YamlValue YamlValue::Child(YAML::Node node, std::string key_path, SourcePosition fallback) const {
  return YamlValue(std::move(node), source_, std::move(key_path), fallback);
}

void YamlValue::Fail(const std::string& message) const {
  FailAt(source_, position_, key_path_, message);
}

std::string YamlValue::Describe() const {
  if (!node_.IsDefined() || node_.IsNull()) return "nothing (an empty value)";
  if (node_.IsSequence()) return "a list";
  if (node_.IsMap()) return "a mapping";
  return Quote(node_.Scalar());
}

int YamlValue::AsInt() const {
  if (node_.IsScalar()) {
    const std::string& text = node_.Scalar();
    // from_chars takes no leading '+'; YAML allows one.
    const char* begin = text.data() + (!text.empty() && text[0] == '+' ? 1 : 0);
    const char* end = text.data() + text.size();
    int value = 0;
    const auto [stop, error] = std::from_chars(begin, end, value);
    if (error == std::errc::result_out_of_range) Fail(StrCat("integer out of range: ", text));
    if (error == std::errc() && stop == end && begin != end) return value;
  }
  Fail("expected an integer, got " + Describe());
}

double YamlValue::AsNumber() const {
  if (node_.IsScalar()) {
    const std::string& text = node_.Scalar();
    const char* begin = text.data() + (!text.empty() && text[0] == '+' ? 1 : 0);
    const char* end = text.data() + text.size();
    double value = 0;
    const auto [stop, error] = std::from_chars(begin, end, value);
    // from_chars also reads "inf" and "nan"; neither is a size or a bandwidth.
    if (error == std::errc() && stop == end && begin != end && std::isfinite(value)) return value;
  }
  Fail("expected a number, got " + Describe());
}

bool YamlValue::AsBool() const {
  if (node_.IsScalar()) {
    bool value = false;
    if (YAML::convert<bool>::decode(node_, value)) return value;
  }
  Fail("expected true or false, got " + Describe());
}

std::string YamlValue::AsString() const {
  // Any scalar reads as text ("host: 10" is the string "10"); lists, mappings and empty values
  // do not.
  if (node_.IsScalar()) return node_.Scalar();
  Fail("expected a string, got " + Describe());
}

std::string YamlValue::AsChoice(std::initializer_list<std::string_view> allowed) const {
  if (!node_.IsScalar()) {
    Fail("expected one of " + JoinChoices(allowed) + ", got " + Describe());
  }
  const std::string& text = node_.Scalar();
  for (std::string_view choice : allowed) {
    if (text == choice) return text;
  }
  Fail("unknown value " + Describe() + "; expected one of " + JoinChoices(allowed));
}

std::vector<YamlValue> YamlValue::AsList() const {
  if (!node_.IsSequence()) Fail("expected a list, got " + Describe());
  std::vector<YamlValue> items;
  items.reserve(node_.size());
  for (size_t i = 0; i < node_.size(); ++i) {
    items.push_back(Child(node_[i], StrCat(key_path_, "[", i, "]"), position_));
  }
  return items;
}

YamlMap YamlValue::AsMap(std::initializer_list<std::string_view> allowed) const {
  return ReadMap(&allowed);
}

YamlMap YamlValue::AsOpenMap() const { return ReadMap(nullptr); }

YamlMap YamlValue::ReadMap(const std::initializer_list<std::string_view>* allowed) const {
  if (!node_.IsMap()) Fail("expected a mapping of keys, got " + Describe());
  YamlMap map(*this);
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    // The iterator yields a proxy pair; copy the nodes (they are handles) rather than bind to it.
    const YAML::Node key_node = it->first;
    const YAML::Node value_node = it->second;
    const SourcePosition key_position = PositionOf(key_node.Mark(), position_);
    if (!key_node.IsScalar()) {
      FailAt(source_, key_position, key_path_, "keys must be plain names, got a list or mapping");
    }
    const std::string key = key_node.Scalar();
    const std::string path = JoinKey(key_path_, key);
    if (allowed != nullptr) {
      bool known = false;
      for (std::string_view a : *allowed) known = known || key == a;
      if (!known) {
        FailAt(source_, key_position, path,
               "unknown key; allowed keys here: " + JoinChoices(*allowed));
      }
    }
    // yaml-cpp keeps repeated keys silently; a repeated key is almost always an editing mistake.
    for (const YamlMap::Entry& seen : map.entries_) {
      if (seen.key == key) {
        FailAt(source_, key_position, path,
               StrCat("key repeated (first at line ", seen.key_position.line, ")"));
      }
    }
    map.entries_.push_back({key, key_position, Child(value_node, path, key_position)});
  }
  return map;
}

std::optional<YamlValue> YamlMap::Find(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.key == key) return e.value;
  }
  return std::nullopt;
}

YamlValue YamlMap::Require(std::string_view key) const {
  if (std::optional<YamlValue> found = Find(key)) return *found;
  FailAt(self_.source_, self_.position_, JoinKey(self_.key_path_, key), "missing required key");
}

}  // namespace gemmapod
