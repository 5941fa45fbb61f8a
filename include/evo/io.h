// Files in and out. In: reading a whole file and parsing JSON with limits checked before anything
// large is allocated, and values quoted into error messages at a readable length; every file evo
// reads whole (DNA, weights, run.json, final.json) goes through here. Out: the one atomic writer
// every output file goes through. Not the data-set loaders' streaming readers (data*.cpp), and
// not the population store's protocol (population.cpp), which calls the writer for its files.
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

// A size for people: "512 bytes", "1.5 MiB", "4.0 GiB".
std::string human_bytes(uint64_t n);

// Writes `bytes` to `path` so that no reader ever sees a half-written file and no link is followed:
// a temporary file beside it with a name unique to this process and call (".<name>.tmp-<pid>-<n>"),
// created with O_EXCL | O_NOFOLLOW (a link planted under that name, or any name, is never written
// through), then rename() onto `path` (which replaces a link at `path` rather than following it).
// `durable`: fsync the file before the rename and the folder after it, so the new content
// survives a power cut. Throws evo::Error "<what> <path>: ..." (what failed, and errno's text);
// the temporary file is removed on every failure.
void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& what,
                       bool durable = false);

}  // namespace evo
