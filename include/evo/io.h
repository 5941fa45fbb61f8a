// Bounded input: reading a whole file and parsing JSON with limits checked before anything large is
// allocated, and values quoted into error messages at a readable length. Every file evo reads
// whole (DNA, weights, population records, run.json) goes through here. Not the data-set loaders'
// streaming readers (data*.cpp) and not the writers.
//
// Why: a DNA path that names /dev/zero, a directory or a 10 GB file must give one clear error,
// not read until memory runs out; JSON nested 100,000 levels deep parses fine but printing it back
// in an error message recurses once per level and overflows the stack.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace evo {

// Deeper JSON is refused. evo's own files nest at most 4 levels (a DNA: object, edges array, edge
// object, filter array); 64 leaves room for any hand-written file and keeps every recursive walk of
// a parsed value (dump, comparison) a few KB of stack.
inline constexpr int kMaxJsonDepth = 64;

// The whole content of the regular file at `path`, at most max_bytes long. Throws evo::Error
// starting with "<what> <path>: " when it does not exist or cannot be read, is not a regular file
// (a directory, a device such as /dev/zero, a FIFO: these could block or never end) or is larger
// than max_bytes (the size is checked before reading; a file that grows while read stops there).
std::string read_file_limited(const std::string& path, uint64_t max_bytes, const std::string& what);

// Parses JSON nested at most kMaxJsonDepth deep. Throws evo::Error "<source>: not valid JSON: ..."
// with nlohmann's position for a syntax error, or the depth for a too-deep value.
nlohmann::json parse_json_limited(const std::string& text, const std::string& source);

// A value for an error message: its JSON text (invalid UTF-8 replaced, never throws), cut to
// max_chars with "... (N characters)" after it.
std::string json_excerpt(const nlohmann::json& value, std::size_t max_chars = 80);

// The same for a string: quoted as JSON, cut the same way. Safe for any bytes.
std::string quote_excerpt(const std::string& s, std::size_t max_chars = 80);

}  // namespace evo
