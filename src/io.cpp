// Bounded file reading and JSON parsing (io.h). Not the data-set loaders or any writer.
#include "evo/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "evo/error.h"

namespace evo {

namespace {

// An fd closed on every path out.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string human_bytes(uint64_t n) {
  const char* unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[48];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
  return buf;
}

std::string read_file_limited(const std::string& path, uint64_t max_bytes, const std::string& what) {
  const std::string name = what + " " + path + ": ";
  // O_NONBLOCK: opening a FIFO with no writer must not hang before fstat can refuse it.
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  if (f.fd < 0)
    throw Error(name + (errno == ENOENT ? std::string("no such file")
                                        : "cannot open (" + std::string(std::strerror(errno)) + ")"));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0)
    throw Error(name + "cannot stat (" + std::string(std::strerror(errno)) + ")");
  if (S_ISDIR(st.st_mode)) throw Error(name + "is a directory, not a file");
  if (!S_ISREG(st.st_mode))
    throw Error(name + "is not a regular file (a device, FIFO or socket); give a file's path");
  if (uint64_t(st.st_size) > max_bytes)
    throw Error(name + "is " + human_bytes(uint64_t(st.st_size)) + ", more than the " +
                human_bytes(max_bytes) + " such a file may have; is it the right file?");
  std::string text(std::size_t(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(f.fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(name + "read failed (" + std::string(std::strerror(errno)) + ")");
    if (n == 0) break;  // shrank while we read: what is there
    got += std::size_t(n);
  }
  text.resize(got);
  return text;
}

nlohmann::json parse_json_limited(const std::string& text, const std::string& source) {
  try {
    // The callback sees each value's depth as the parser enters it, so a too-deep file is refused
    // after reading kMaxJsonDepth levels, before any recursive walk could run.
    return nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t,
                                           nlohmann::json&) {
      if (depth > kMaxJsonDepth)
        throw Error(source + ": not valid here: JSON nested more than " +
                    std::to_string(kMaxJsonDepth) + " levels deep");
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    // Keep nlohmann's position ("at line 3, column 7"), drop its "[json.exception...]" tag.
    std::string what = e.what();
    if (const auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    throw Error(source + ": not valid JSON: " + what);
  }
}

std::string json_excerpt(const nlohmann::json& value, std::size_t max_chars) {
  std::string s = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() <= max_chars) return s;
  const std::size_t n = s.size();
  s.resize(max_chars);
  return s + "... (" + std::to_string(n) + " characters)";
}

void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& what,
                       bool durable) {
  static std::atomic<uint64_t> counter{0};
  const std::size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string tmp = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) +
                          "." + name + ".tmp-" + std::to_string(::getpid()) + "-" +
                          std::to_string(counter++);
  const std::string where = what + " " + path + ": ";
  const auto fail = [&](const std::string& step, int e) {
    ::unlink(tmp.c_str());
    throw Error(where + step + " (" + std::strerror(e) + ")");
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int e = errno;
    throw Error(where + "cannot write it: creating " + tmp + " failed (" + std::strerror(e) +
                (e == ENOENT ? "; does the folder exist?" : "") + ")");
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      fail("writing failed" + std::string(e == ENOSPC ? ", the disk is full" : ""), e);
    }
    done += std::size_t(n);
  }
  if (durable && ::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    fail("fsync failed", e);
  }
  if (::close(fd) != 0) fail("writing failed at close", errno);  // NFS reports errors here
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename " + tmp + " onto it", errno);
  if (durable) {
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
}

std::string quote_excerpt(const std::string& s, std::size_t max_chars) {
  return json_excerpt(nlohmann::json(s), max_chars);
}

}  // namespace evo
