// YamlValue: a yaml-cpp node that knows where it came from (file, line, column, key path), so
// typed reads and checks can fail with one line that names all three:
//   configs/pods/x.yaml:7:12: parallelism.tp: expected an integer, got '1.5'
// Include it only from .cc files: it keeps yaml-cpp out of public headers.
#pragma once

#include <yaml-cpp/yaml.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gemmapod {

// 1-based position in a source file.
struct SourcePosition {
  int line = 1;
  int column = 1;
};

// Throws gemmapod::Error("<source>:<line>:<column>: <key_path>: <message>"); the key path part is
// left out when empty (the document itself). The message is one line.
[[noreturn]] void FailAt(const std::string& source, SourcePosition at, const std::string& key_path,
                         const std::string& message);

class YamlMap;
class YamlValue;

// Reads a small configuration file (pod file, model config) whole. Refuses what is not a regular
// file (a directory, a device, a pipe) and anything over 4 MiB, naming the path and `what` it was
// meant to be.
std::string ReadConfigText(const std::string& path, const std::string& what);

// Parses YAML text; a syntax error fails as "<source>:<line>:<column>: YAML syntax error: ...".
// A file holding several YAML documents is refused (only the first would be read).
YamlValue ParseYamlDocument(const std::string& text, const std::string& source);

class YamlValue {
 public:
  // The document root; `source` names the file in messages.
  YamlValue(YAML::Node node, std::string source);

  const std::string& key_path() const { return key_path_; }
  const std::string& source() const { return source_; }
  SourcePosition position() const { return position_; }
  bool is_null() const { return node_.IsNull(); }
  bool is_scalar() const { return node_.IsScalar(); }
  bool is_list() const { return node_.IsSequence(); }
  bool is_map() const { return node_.IsMap(); }
  // The raw text of a scalar ("" for anything else).
  std::string scalar_text() const { return node_.IsScalar() ? node_.Scalar() : std::string(); }

  [[noreturn]] void Fail(const std::string& message) const;

  // Typed reads; each fails with "expected <type>, got <what is there>" on a mismatch.
  int AsInt() const;        // decimal integer that fits in int
  double AsNumber() const;  // finite integer or decimal number
  bool AsBool() const;      // true/false (also yes/no, on/off, as YAML 1.1 allows)
  std::string AsString() const;
  // A string that must be one of `allowed`; the message lists them.
  std::string AsChoice(std::initializer_list<std::string_view> allowed) const;
  std::vector<YamlValue> AsList() const;
  // A mapping whose keys must all be in `allowed`; rejects unknown and repeated keys.
  YamlMap AsMap(std::initializer_list<std::string_view> allowed) const;
  // A mapping with free-form keys (e.g. environment variables); still rejects repeated keys.
  YamlMap AsOpenMap() const;

  // Describes the value for "got ..." in messages: 'text', a list, a mapping, nothing.
  std::string Describe() const;

 private:
  YamlValue(YAML::Node node, std::string source, std::string key_path, SourcePosition fallback);
  YamlValue Child(YAML::Node node, std::string key_path, SourcePosition fallback) const;
  YamlMap ReadMap(const std::initializer_list<std::string_view>* allowed) const;

  YAML::Node node_;
  std::string source_;
  std::string key_path_;
  SourcePosition position_;

  friend class YamlMap;
};

// The entries of a checked mapping, in file order.
class YamlMap {
 public:
  struct Entry {
    std::string key;
    SourcePosition key_position;
    YamlValue value;
  };

  // The value under `key`, or nothing when the key is absent.
  std::optional<YamlValue> Find(std::string_view key) const;
  // The value under `key`; "missing required key" (at the mapping's position) when absent.
  YamlValue Require(std::string_view key) const;
  const std::vector<Entry>& entries() const { return entries_; }
  // The mapping itself, for messages about relationships between its keys.
  const YamlValue& self() const { return self_; }

 private:
  explicit YamlMap(YamlValue self) : self_(std::move(self)) {}

  YamlValue self_;
  std::vector<Entry> entries_;

  friend class YamlValue;
};

}  // namespace gemmapod
