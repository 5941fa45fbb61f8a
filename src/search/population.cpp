// The population store's file protocol: atomic renames between alive/, dead/, staging/ and free/,
// crash recovery and garbage collection (docs/population.md). Not the search loop (search.cpp).
#include "evo/population.h"
#include "evo/io.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

namespace evo {

namespace {

constexpr const char* kRunFormat = "evo-run/1";
constexpr const char* kVictimPrefix = "victim-";  // staging/<child>/victim-<id>/: a kill in flight

// A folder or file of ours vanished: another process recovered (and discarded) the child that
// owned it. Callers turn it into a message for people, or skip (recovery racing recovery).
class Gone : public Error {
 public:
  explicit Gone(const std::string& what) : Error(what) {}
};

std::string sys_text(int e) {
  return std::system_category().message(e);
}

[[noreturn]] void throw_sys(const std::string& what, int e) {
  if (e == ENOENT) throw Gone(what + ": " + sys_text(e));
  throw Error(what + ": " + sys_text(e));
}

double unix_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double to_seconds(const timespec& ts) {
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::optional<struct stat> stat_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

// Entry names of a folder; hidden ones (temporary files, folders under construction) only on
// request. A folder that does not exist is empty.
std::vector<std::string> list_names(const std::string& dir, bool hidden = false) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return names;
    throw_sys("population: cannot list " + dir, errno);
  }
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (!hidden && name[0] == '.') continue;
    // A symbolic link is never an individual, a slot or a child: evo makes none, and following
    // one would let a planted link (alive/x -> /outside) make a kill write into, or garbage
    // collection delete from, a folder outside the run.
    if (e->d_type == DT_LNK) continue;
    if (e->d_type == DT_UNKNOWN) {  // file systems without d_type (some NFS): ask
      struct stat st {};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        continue;
    }
    names.push_back(name);
  }
  ::closedir(d);
  return names;
}

// The store's own files are a few KB; a bigger one (or a device planted under a record's name)
// is damage, refused before memory runs out.
constexpr std::size_t kMaxStoreFileBytes = std::size_t(1) << 20;

// The whole file, or nullopt when it (or its folder) does not exist. A link is not followed
// (O_NOFOLLOW: a record's file linked to somewhere outside the run is not read) and a file over
// kMaxStoreFileBytes is an error naming it.
// Why not io.h's read_file_limited: the store needs what it does not do. A file that vanishes is
// the normal outcome of a race with another process (nullopt here, an error there); a link must
// not be followed; and /proc/<pid>/stat, which decides whether a worker is alive, reports a size
// of 0, so a reader that trusts fstat's size (as read_file_limited does, to refuse big files
// before reading) would read nothing from it.
std::optional<std::string> read_text(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    throw_sys("population: cannot open " + path, errno);
  }
  std::string text;
  char buf[65536];
  for (;;) {
    if (text.size() > kMaxStoreFileBytes) {
      ::close(fd);
      throw Error("population: " + path + " is larger than the " +
                  std::to_string(kMaxStoreFileBytes >> 20) +
                  " MiB a record file may have; the run folder is damaged");
    }
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      throw_sys("population: cannot read " + path, e);
    }
    if (n == 0) break;
    text.append(buf, std::size_t(n));
  }
  ::close(fd);
  return text;
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) throw_sys("population: cannot open " + path + " to fsync it", errno);
  // Some file systems cannot fsync a folder (EINVAL); their renames are then as durable as they
  // get.
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int e = errno;
    ::close(fd);
    throw_sys("population: cannot fsync " + path, e);
  }
  ::close(fd);
}

void write_text(const std::string& path, const std::string& text, bool durable) {
  // Every name written here is new (a unique temporary name, or a file in a folder this process
  // just made): O_EXCL | O_NOFOLLOW, so a link planted in the run folder is never written through.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw_sys("population: cannot create " + path, errno);
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      throw_sys("population: cannot write " + path, e);
    }
    done += std::size_t(n);
  }
  if (durable && ::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    throw_sys("population: cannot fsync " + path, e);
  }
  // NFS reports write errors at close (close-to-open consistency).
  if (::close(fd) != 0) throw_sys("population: cannot write " + path, errno);
}

// Removes a tree of ours that nobody needs any more; false when some of it stays (an NFS
// ".nfs" file of a reader that still has a file open, say): the caller leaves it for later.
bool remove_tree(const std::string& path) {
  // Two recoverers may remove the same tree at once: entries vanishing under us are fine.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (!ec || ec == std::errc::no_such_file_or_directory) return true;
  }
  return false;
}

// ---- who we are ---------------------------------------------------------------------------------

struct Machine {
  std::string host;      // as gethostname() says
  std::string host_tag;  // the same, safe inside an id: [A-Za-z0-9_.], at most 32 characters
  std::string boot_id;   // distinguishes two machines with one name, and one machine's boots
};

const Machine& machine() {
  static const Machine m = [] {
    Machine r;
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) == 0) r.host = name;
    if (r.host.empty()) r.host = "localhost";
    // EVO_HOST names this process's machine instead: containers that share a host name and a
    // kernel but not a pid namespace must be told apart (docs/population.md, "NFS"), and tests
    // run several "machines" on one. Such a machine is judged by heartbeat, like a remote one.
    const char* as = std::getenv("EVO_HOST");
    const bool override_host = as && *as;
    if (override_host) r.host = std::string(as).substr(0, 64);
    for (char c : r.host.substr(0, 32))
      r.host_tag += (std::isalnum(static_cast<unsigned char>(c)) || c == '.') ? c : '_';
    try {
      if (auto id = read_text("/proc/sys/kernel/random/boot_id")) {
        r.boot_id = *id;
        while (!r.boot_id.empty() && std::isspace(static_cast<unsigned char>(r.boot_id.back())))
          r.boot_id.pop_back();
      }
    } catch (const Error&) {
    }
    if (override_host) r.boot_id = "EVO_HOST=" + r.host;  // never this kernel's: no pid checks
    return r;
  }();
  return m;
}

struct ProcStat {
  char state = '?';
  uint64_t start = 0;  // clock ticks after boot: with the pid, names one process for ever
};

std::optional<ProcStat> proc_stat(pid_t pid) {
  std::optional<std::string> text;
  try {
    text = read_text("/proc/" + std::to_string(pid) + "/stat");
  } catch (const Error&) {
    return std::nullopt;
  }
  if (!text) return std::nullopt;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after the last ')'.
  const std::size_t close = text->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream in(text->substr(close + 1));
  ProcStat s;
  std::string skip;
  in >> s.state;
  for (int field = 4; field < 22; ++field) in >> skip;  // ppid ... itrealvalue
  in >> s.start;                                        // field 22: starttime
  if (!in) return std::nullopt;
  return s;
}

// Unique across machines without coordination: host and pid tell processes apart, the counter
// the children of one process, and the leading time makes ids sort by creation.
std::string unique_id() {
  static std::atomic<uint64_t> counter{0};
  const long long ms = (long long)(unix_now() * 1000.0);
  char buf[128];
  std::snprintf(buf, sizeof buf, "%013lld-%s-%d-%llu", ms, machine().host_tag.c_str(),
                int(::getpid()), (unsigned long long)counter.fetch_add(1));
  return buf;
}

nlohmann::json owner_json() {
  const auto ps = proc_stat(::getpid());
  return {{"host", machine().host},
          {"boot_id", machine().boot_id},
          {"pid", int(::getpid())},
          {"start", ps ? ps->start : 0},
          {"since", unix_now()}};
}

// Whether the process that wrote owner.json still runs. On this machine (same name and boot) we
// ask the kernel: the pid must exist, not be a zombie, and have the same start time (pids are
// reused). Elsewhere we cannot, so the folder's heartbeat (mtime) must be recent.
bool owner_alive(const nlohmann::json& owner, double dir_mtime, double now, double stale_seconds) {
  const std::string host = owner.value("host", std::string());
  const std::string boot = owner.value("boot_id", std::string());
  if (host == machine().host && boot == machine().boot_id) {
    const int pid = owner.value("pid", 0);
    if (pid <= 0) return false;
    if (pid == int(::getpid())) return true;
    if (const auto ps = proc_stat(pid)) {
      if (ps->state == 'Z' || ps->state == 'X') return false;
      return ps->start == owner.value("start", uint64_t(0));
    }
    if (proc_stat(::getpid())) return false;  // /proc works, so the pid is gone
    return !(::kill(pid, 0) != 0 && errno == ESRCH);
  }
  return now - dir_mtime <= stale_seconds;
}

// "Now" as the file system's clock sees it: on NFS, mtimes come from the server, and comparing
// them with this machine's clock would add the clock skew to every staleness test.
double fs_now(const std::string& staging) {
  const std::string probe = staging + "/.clock-" + unique_id();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return unix_now();
  struct stat st {};
  const bool ok = ::fstat(fd, &st) == 0;
  ::close(fd);
  ::unlink(probe.c_str());
  return ok ? to_seconds(st.st_mtim) : unix_now();
}

// ---- JSON ---------------------------------------------------------------------------------------

// Records are JSON nested at most kMaxJsonDepth deep (a deeper one would overflow the stack when
// an error message prints a value of it).
nlohmann::json parse_json(const std::string& text, const std::string& source) {
  try {
    return parse_json_limited(text, source);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + "; the file is damaged");
  }
}

double get_number(const nlohmann::json& j, const char* key, double fallback,
                  const std::string& source) {
  if (!j.contains(key)) return fallback;
  const nlohmann::json& v = j.at(key);
  if (v.is_null()) return NAN;
  if (!v.is_number())
    throw Error(source + ": field '" + key + "' should be a number, not " + json_excerpt(v));
  return v.get<double>();
}

// A count (steps, parameters): a number that converts to int64_t exactly enough. A double outside
// int64_t's range would make the conversion undefined (found by tests/fuzz/fuzz_record.cpp).
int64_t get_count(const nlohmann::json& j, const char* key, const std::string& source) {
  const double v = get_number(j, key, 0, source);
  if (std::isnan(v)) return 0;
  if (!(v >= 0 && v <= 9.0e15))
    throw Error(source + ": field '" + key + "' should be a count from 0 to 9e15, not " +
                json_excerpt(j.at(key)));
  return int64_t(v);
}

std::string get_string(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.contains(key) || j.at(key).is_null()) return "";
  if (!j.at(key).is_string())
    throw Error(source + ": field '" + key + "' should be a string, not " + json_excerpt(j.at(key)));
  return j.at(key).get<std::string>();
}

// NaN and infinities are not JSON: write null.
nlohmann::json number(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json();
}

// Whether a name in free/ is a slot this store wrote: "init-NNNNNN.json" (the initial population)
// or "<unique_id>.json" (a returned slot: digits, host tag, pid, counter). Anything else dropped
// there (a README, an editor's backup) is not a slot and never lets the population grow.
bool is_slot_name(const std::string& name) {
  const std::size_t n = name.size();
  if (n < 6 || name.compare(n - 5, 5, ".json") != 0) return false;
  const std::string stem = name.substr(0, n - 5);
  const auto digits = [](const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(),
                                     [](char c) { return c >= '0' && c <= '9'; });
  };
  if (starts_with(stem, "init-")) return stem.size() == 11 && digits(stem.substr(5));
  const std::size_t first = stem.find('-'), last = stem.rfind('-');
  if (first == std::string::npos || first == last) return false;
  const std::size_t pid = stem.rfind('-', last - 1);
  return digits(stem.substr(0, first)) && pid > first && digits(stem.substr(pid + 1, last - pid - 1)) &&
         digits(stem.substr(last + 1));
}

std::vector<std::string> slot_names(const std::string& root) {
  std::vector<std::string> names = list_names(root + "/free");
  names.erase(std::remove_if(names.begin(), names.end(),
                             [](const std::string& n) { return !is_slot_name(n); }),
              names.end());
  return names;
}

// ---- the protocol's steps -----------------------------------------------------------------------

// The victim folders a staging folder holds (at most one: a child replaces one individual).
std::vector<std::string> victims_in(const std::string& dir) {
  std::vector<std::string> ids;
  for (const std::string& name : list_names(dir))
    if (starts_with(name, kVictimPrefix)) ids.push_back(name.substr(std::strlen(kVictimPrefix)));
  return ids;
}

bool holds_slot(const std::string& dir) {
  return exists(dir + "/slot.json") || !victims_in(dir).empty();
}

// Writes `name` in `dir` so that it is never seen half-written: a temporary file, then a rename.
void write_atomic(const std::string& dir, const std::string& name, const std::string& text,
                  bool durable) {
  const std::string tmp = dir + "/." + name + ".tmp-" + unique_id();
  write_text(tmp, text, durable);
  const std::string to = dir + "/" + name;
  if (::rename(tmp.c_str(), to.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw_sys("population: cannot rename " + tmp + " to " + to, e);
  }
}

// Finishes a kill that moved a victim into staging folder `dir` (child `child_id`): the slot is
// recorded in slot.json first (while the victim folder still proves it), then death.json, then
// the victim moves on to dead/. Each step checks what is done, so a recoverer can finish the kill
// of a worker that died at any point. death_time: when known (the killer), else the time the
// victim folder was moved (its ctime).
void settle(const std::string& root, const std::string& dir, const std::string& child_id,
            bool durable, std::optional<double> death_time) {
  for (const std::string& victim : victims_in(dir)) {
    const std::string from = dir + "/" + kVictimPrefix + victim;
    if (!exists(dir + "/slot.json")) {
      const nlohmann::json slot = {
          {"slot", "kill-" + victim}, {"origin", "kill"}, {"victim", victim}, {"killer", child_id}};
      write_atomic(dir, "slot.json", slot.dump() + "\n", durable);
    }
    if (!exists(from + "/death.json")) {
      double t = death_time.value_or(NAN);
      if (std::isnan(t)) {
        const auto st = stat_of(from);
        t = st ? to_seconds(st->st_ctim) : unix_now();
      }
      const nlohmann::json death = {{"death_time", t}, {"killed_by", child_id}};
      write_atomic(from, "death.json", death.dump(2) + "\n", durable);
    }
    // A killer that died while writing death.json left its temporary file: not part of the record.
    for (const std::string& name : list_names(from, true))
      if (starts_with(name, ".death.json.tmp-")) ::unlink((from + "/" + name).c_str());
    const std::string to = root + "/dead/" + victim;
    if (::rename(from.c_str(), to.c_str()) != 0) {
      const int e = errno;
      if (e == ENOENT && exists(to)) continue;  // NFS: a retransmitted rename that had succeeded
      if (e == EEXIST || e == ENOTEMPTY)
        throw Error("population: cannot move " + from + " to " + to +
                    ": it exists already, so two individuals share the id " + victim +
                    "; the run folder is damaged");
      throw_sys("population: cannot move " + from + " to " + to, e);
    }
    if (durable) fsync_path(root + "/dead", true);
  }
}

// Moves the slot a staging folder holds back to free/.
void release_slot(const std::string& root, const std::string& dir, bool durable) {
  const std::string from = dir + "/slot.json";
  if (!exists(from)) return;
  const std::string to = root + "/free/" + unique_id() + ".json";
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int e = errno;
    if (!(e == ENOENT && exists(to)))  // NFS: a retransmitted rename that had succeeded
      throw_sys("population: cannot move " + from + " to " + to, e);
  }
  if (durable) fsync_path(root + "/free", true);
}

// Removes a staging folder that holds no slot any more. It is renamed to a hidden name first, so
// that a crash half-way through the removal leaves no half-removed child (one without its
// owner.json would look alive until it grew stale); recover() removes such .trash- leftovers.
void discard_dir(const std::string& root, const std::string& dir) {
  const std::string trash = root + "/staging/.trash-" + unique_id();
  if (::rename(dir.c_str(), trash.c_str()) != 0)
    throw_sys("population: cannot rename " + dir + " to " + trash, errno);
  remove_tree(trash);  // what stays is hidden and holds nothing; recover() tries again
}

// Abandons a staging folder: finishes a kill in flight, frees the slot, removes the rest.
void abandon_dir(const std::string& root, const std::string& dir, const std::string& id,
                 bool durable) {
  try {
    settle(root, dir, id, durable, std::nullopt);
    release_slot(root, dir, durable);
    discard_dir(root, dir);
  } catch (const Gone&) {
    // Another process recovered this child already, slot included.
  }
}

void check_id(const std::string& id, const std::string& root) {
  if (id.empty() || id[0] == '.' || id.find('/') != std::string::npos || id.size() > 200)
    throw Error("population " + root + ": '" + id +
                "' is not an individual id (ids are folder names under alive/ and dead/)");
}

}  // namespace

// ---- records ------------------------------------------------------------------------------------

nlohmann::json to_json(const IndividualRecord& r) {
  return {{"id", r.id},
          {"parent", r.parent},
          {"mutation", r.mutation},
          {"detail", r.detail},
          {"fitness", number(r.fitness)},
          {"test_accuracy", number(r.test_accuracy)},
          {"failed", r.failed},
          {"failure", r.failure},
          {"birth_time", number(r.birth_time)},
          {"death_time", number(r.death_time)},
          {"killed_by", r.killed_by},
          {"steps", r.steps},
          {"flops", number(r.flops)},
          {"cumulative_flops", number(r.cumulative_flops)},
          {"params", r.params},
          {"worker", r.worker},
          {"host", r.host},
          {"train_seconds", number(r.train_seconds)},
          {"learning_rate", number(r.learning_rate)}};
}

IndividualRecord record_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": an individual's record should be a JSON object");
  IndividualRecord r;
  r.id = get_string(j, "id", source);
  r.parent = get_string(j, "parent", source);
  r.mutation = get_string(j, "mutation", source);
  r.detail = get_string(j, "detail", source);
  r.fitness = get_number(j, "fitness", 0, source);
  r.test_accuracy = get_number(j, "test_accuracy", NAN, source);
  if (j.contains("failed") && !j.at("failed").is_null()) {
    if (!j.at("failed").is_boolean()) throw Error(source + ": field 'failed' should be true/false");
    r.failed = j.at("failed").get<bool>();
  }
  r.failure = get_string(j, "failure", source);
  r.birth_time = get_number(j, "birth_time", NAN, source);
  r.death_time = get_number(j, "death_time", NAN, source);
  r.killed_by = get_string(j, "killed_by", source);
  r.steps = get_count(j, "steps", source);
  r.flops = get_number(j, "flops", 0, source);
  r.cumulative_flops = get_number(j, "cumulative_flops", 0, source);
  r.params = get_count(j, "params", source);
  r.worker = get_string(j, "worker", source);
  r.host = get_string(j, "host", source);
  r.train_seconds = get_number(j, "train_seconds", 0, source);
  r.learning_rate = get_number(j, "learning_rate", 0, source);
  return r;
}

// ---- Staging ------------------------------------------------------------------------------------

Population::Staging::Staging(std::string root, std::string id_, bool durable,
                             std::function<void(const std::string&)> on_warning)
    : id(std::move(id_)),
      dir(root + "/staging/" + id),
      root_(std::move(root)),
      durable_(durable),
      open_(true),
      on_warning_(std::move(on_warning)) {}

Population::Staging::Staging(Staging&& other) noexcept
    : id(std::move(other.id)),
      dir(std::move(other.dir)),
      root_(std::move(other.root_)),
      durable_(other.durable_),
      open_(std::exchange(other.open_, false)),
      on_warning_(std::move(other.on_warning_)) {}

Population::Staging& Population::Staging::operator=(Staging&& other) noexcept {
  if (this != &other) {
    discard();
    id = std::move(other.id);
    dir = std::move(other.dir);
    root_ = std::move(other.root_);
    durable_ = other.durable_;
    open_ = std::exchange(other.open_, false);
    on_warning_ = std::move(other.on_warning_);
  }
  return *this;
}

Population::Staging::~Staging() {
  discard();
}

void Population::Staging::discard() noexcept {
  if (!open_) return;
  open_ = false;
  try {
    abandon_dir(root_, dir, id, durable_);
  } catch (const std::exception& e) {
    // A destructor cannot throw, so the caller hears it (a search passes it on as a warning).
    try {
      if (on_warning_)
        on_warning_("population: could not abandon child " + id + ": " + e.what() +
                    " (recover() will)");
    } catch (...) {
    }
  }
}

// ---- Population ---------------------------------------------------------------------------------

namespace {

[[noreturn]] void throw_gone(const std::string& root, const std::string& id) {
  throw Error("population " + root + ": the staging folder of child " + id +
              " is gone: another process judged its worker dead and discarded the child (on "
              "this machine: its process looked gone; on another: no heartbeat() for longer than "
              "recover()'s stale_seconds); its slot is free again. Call heartbeat() while "
              "training long children");
}

void require_open(const Population::Staging& child, const char* what) {
  if (!child.open())
    throw Error(std::string("population: ") + what + " of child '" + child.id +
                "', which was already published or abandoned: begin_child() gives a new one");
}

// Builds the whole run beside `root` and renames it into place, so the run appears at once,
// complete with its N free slots. False when another process created it first.
bool create_run(const std::string& root, const PopulationOptions& o) {
  const std::filesystem::path parent = std::filesystem::path(root).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec)
      throw UsageError("population: cannot create the folder " + parent.string() + " for run " +
                       root + ": " + ec.message());
  }
  // A creator killed half-way left its RUN.creating-* folder: nothing else ever names it, so any
  // such folder older than ten minutes (creating even 100,000 slots takes seconds) is removed.
  {
    const std::filesystem::path dir = parent.empty() ? "." : parent;
    const std::string prefix = std::filesystem::path(root).filename().string() + ".creating-";
    for (const std::string& name : list_names(dir.string(), true)) {
      if (!starts_with(name, prefix.c_str())) continue;
      const std::string path = (dir / name).string();
      const auto st = stat_of(path);
      if (st && S_ISDIR(st->st_mode) && unix_now() - to_seconds(st->st_mtim) > 600)
        remove_tree(path);
    }
  }
  const std::string tmp = root + ".creating-" + unique_id();
  try {
    for (const char* sub : {"", "/alive", "/dead", "/staging", "/free"})
      if (::mkdir((tmp + sub).c_str(), 0755) != 0)
        throw_sys("population: cannot create " + tmp + sub, errno);
    for (int k = 0; k < o.size; ++k) {
      char slot[32];
      std::snprintf(slot, sizeof slot, "init-%06d", k);
      const nlohmann::json j = {{"slot", slot}, {"origin", "initial"}};
      write_text(tmp + "/free/" + slot + ".json", j.dump() + "\n", false);
    }
    const nlohmann::json run = {{"format", kRunFormat},
                                {"population_size", o.size},
                                {"settings", o.settings},
                                {"created_with", o.recorded},
                                {"created", unix_now()},
                                {"creator", owner_json()}};
    write_text(tmp + "/run.json", run.dump(2) + "\n", false);
    if (o.durable) {
      // One flush for the N slot files instead of N fsyncs.
      const int fd = ::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd >= 0) {
        ::syncfs(fd);
        ::close(fd);
      }
    }
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
  // rename() replaces `root` only when it is missing or empty: of several creators, one wins.
  if (::rename(tmp.c_str(), root.c_str()) != 0) {
    const int e = errno;
    remove_tree(tmp);
    if (e == EEXIST || e == ENOTEMPTY) return false;
    if (e == EBUSY)
      throw UsageError("population: cannot create the run in " + root +
                       ", a mount point: use a folder inside it");
    throw Error("population: cannot create the run " + root + ": " + sys_text(e));
  }
  if (o.durable) fsync_path(parent.empty() ? "." : parent.string(), true);
  return true;
}

}  // namespace

Population::Population(std::string dir, PopulationOptions options)
    : durable_(options.durable), on_warning_(std::move(options.on_warning)) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) throw UsageError("population: the run folder name is empty");
  root_ = std::move(dir);
  if (!options.settings.is_object())
    throw UsageError("population: settings for run " + root_ + " should be a JSON object");
  for (int attempt = 0;; ++attempt) {
    if (auto text = read_text(root_ + "/run.json")) {
      const std::string source = root_ + "/run.json";
      const nlohmann::json run = parse_json(*text, source);
      if (!run.is_object() || run.value("format", std::string()) != kRunFormat)
        throw UsageError(source + ": not a run of this version of evo (format should be \"" +
                         std::string(kRunFormat) + "\")");
      const double n = get_number(run, "population_size", 0, source);
      settings_ = run.contains("settings") ? run.at("settings") : nlohmann::json::object();
      if (run.contains("created_with") && run.at("created_with").is_object())
        recorded_ = run.at("created_with");
      size_ = std::isfinite(n) && n >= 1 && n < 1e9 ? int(n) : 0;
      if (size_ <= 0) throw UsageError(source + ": population_size should be positive");
      if (options.size != 0 && options.size != size_)
        throw UsageError("population: run " + root_ + " has a population of " +
                         std::to_string(size_) + " (run.json), not " +
                         std::to_string(options.size) + ": ask for " + std::to_string(size_) +
                         " to resume it, or choose a new run folder");
      for (const auto& [key, value] : options.settings.items())
        if (settings_.is_object() && settings_.contains(key) && settings_.at(key) != value)
          throw UsageError("population: run " + root_ + " was started with " + key + " = " +
                           settings_.at(key).dump() + " (run.json), not " + value.dump() +
                           ": use the run's value to resume it, or choose a new run folder");
      return;
    }
    if (options.size <= 0)
      throw UsageError("population: " + root_ +
                       " holds no run (no run.json): give a population size to start a run "
                       "there, or point at an existing run folder");
    if (const auto st = stat_of(root_)) {
      if (!S_ISDIR(st->st_mode))
        throw UsageError("population: " + root_ + " is a file, not a run folder");
      // Not empty: a run another process created between our read of run.json and this listing
      // (its rename replaced the empty folder whole), or a folder that is not a run. Look again
      // before saying so (the 4-process stress test of test_population met this race in 1 of 3 runs).
      if (!list_names(root_, true).empty() && exists(root_ + "/run.json")) continue;
      if (!list_names(root_, true).empty())
        throw UsageError("population: " + root_ +
                         " is not empty and holds no run.json, so it is not an evo run folder: "
                         "choose a new or empty folder for the run");
    }
    if (create_run(root_, options)) {
      created_ = true;
      continue;  // read back what we wrote, like everyone else
    }
    if (attempt > 100) throw Error("population: cannot create or open the run " + root_);
  }
}

Population::Staging Population::begin_child() {
  const std::string id = unique_id();
  const std::string staging = root_ + "/staging";
  // Built under a hidden name and renamed, so that recover() never sees a child without owner.
  const std::string tmp = staging + "/.new-" + id;
  if (::mkdir(tmp.c_str(), 0755) != 0)
    throw Error("population: cannot create " + tmp + ": " + sys_text(errno) +
                " (is the run folder still there and writable?)");
  try {
    write_text(tmp + "/owner.json", owner_json().dump(2) + "\n", false);
    if (::rename(tmp.c_str(), (staging + "/" + id).c_str()) != 0)
      throw_sys("population: cannot rename " + tmp, errno);
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
  return Staging(root_, id, durable_, on_warning_);
}

FreeSlot Population::take_free_slot(Staging& child) {
  require_open(child, "take_free_slot");
  try {
    if (holds_slot(child.dir))
      throw Error("population: child " + child.id +
                  " already holds a slot; a child fills exactly one: publish it");
  } catch (const Gone&) {
    throw_gone(root_, child.id);
  }
  std::vector<std::string> names = slot_names(root_);
  thread_local std::mt19937_64 rng(std::random_device{}());
  // Workers that start together would all race for the first slot: spread them out.
  std::shuffle(names.begin(), names.end(), rng);
  const std::string to = child.dir + "/slot.json";
  bool taken = false;
  for (const std::string& name : names) {
    const std::string from = root_ + "/free/" + name;
    if (::rename(from.c_str(), to.c_str()) == 0) {
      taken = true;
      break;
    }
    const int e = errno;
    if (e != ENOENT)
      throw Error("population: cannot move " + from + " to " + to + ": " + sys_text(e));
    if (!exists(child.dir)) throw_gone(root_, child.id);
    if (exists(to)) {  // NFS: a retransmitted rename reports ENOENT after succeeding
      taken = true;
      break;
    }
  }
  if (!taken) return FreeSlot::kNone;
  try {
    const auto text = read_text(to);
    if (!text) throw_gone(root_, child.id);
    const nlohmann::json slot = nlohmann::json::parse(*text, nullptr, false);
    if (slot.is_object() && slot.value("origin", std::string()) == "initial")
      return FreeSlot::kInitial;
  } catch (const Gone&) {
    throw_gone(root_, child.id);
  }
  return FreeSlot::kReturned;
}

bool Population::kill(Staging& child, const std::string& victim) {
  require_open(child, "kill");
  check_id(victim, root_);
  if (victim == child.id) throw Error("population: child " + child.id + " cannot kill itself");
  try {
    if (holds_slot(child.dir))
      throw Error("population: child " + child.id + " already holds a slot, so it cannot kill " +
                  victim + ": a child replaces exactly one individual");
  } catch (const Gone&) {
    throw_gone(root_, child.id);
  }
  const std::string from = root_ + "/alive/" + victim;
  const std::string to = child.dir + "/" + kVictimPrefix + victim;
  const double now = unix_now();
  // The kill itself: of all the processes renaming alive/<victim>, exactly one succeeds.
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int e = errno;
    if (e != ENOENT)
      throw Error("population: cannot move " + from + " to " + to + ": " + sys_text(e));
    if (!exists(child.dir)) throw_gone(root_, child.id);
    if (!exists(to)) return false;  // someone else killed it first
    // else: NFS reported ENOENT for a retransmitted rename that had succeeded: the kill is ours.
  }
  try {
    settle(root_, child.dir, child.id, durable_, now);
  } catch (const Gone&) {
    throw_gone(root_, child.id);
  }
  return true;
}

void Population::publish(Staging&& child, IndividualRecord record) {
  require_open(child, "publish");
  const std::string where = "population: cannot publish child " + child.id + ": ";
  try {
    settle(root_, child.dir, child.id, durable_, std::nullopt);
    if (!exists(child.dir)) throw_gone(root_, child.id);
    if (!exists(child.dir + "/slot.json"))
      throw Error(where +
                  "it holds no slot. Take a free one (take_free_slot) or kill an individual "
                  "first: a child only ever replaces one, so the population keeps its size");
    if (!exists(child.dna_path()))
      throw Error(where + child.dna_path() + " is missing: write the child's DNA there first");
    if (!record.failed && !exists(child.weights_path()))
      throw Error(where + child.weights_path() +
                  " is missing: save the trained weights there, or mark the child failed");
    record.id = child.id;
    if (std::isnan(record.birth_time) || record.birth_time <= 0) record.birth_time = unix_now();
    if (record.host.empty()) record.host = machine().host;
    record.death_time = NAN;
    record.killed_by.clear();
    write_text(child.dir + "/metrics.json", to_json(record).dump(2) + "\n", false);
    if (durable_) {
      for (const std::string& name : list_names(child.dir)) {
        const auto st = stat_of(child.dir + "/" + name);
        if (st && S_ISREG(st->st_mode)) fsync_path(child.dir + "/" + name, false);
      }
      fsync_path(child.dir, true);
    }
    const std::string to = root_ + "/alive/" + child.id;
    // The publication: readers see the complete folder or nothing.
    if (::rename(child.dir.c_str(), to.c_str()) != 0) {
      const int e = errno;
      if (e != ENOENT || !exists(to))
        throw_sys("population: cannot move " + child.dir + " to " + to, e);
    }
    child.open_ = false;
    if (durable_) fsync_path(root_ + "/alive", true);
  } catch (const Gone&) {
    throw_gone(root_, child.id);
  }
}

void Population::abandon(Staging&& child) {
  if (!child.open_) return;
  child.open_ = false;
  abandon_dir(root_, child.dir, child.id, durable_);
}

void Population::heartbeat(const Staging& child) const {
  require_open(child, "heartbeat");
  if (::utimensat(AT_FDCWD, child.dir.c_str(), nullptr, 0) != 0) {
    if (errno == ENOENT) throw_gone(root_, child.id);
    throw Error("population: cannot touch " + child.dir + ": " + sys_text(errno));
  }
}

std::vector<std::string> Population::alive_ids() const {
  std::vector<std::string> ids = list_names(root_ + "/alive");
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::size_t Population::dead_count() const {
  return list_names(root_ + "/dead").size();
}

std::size_t Population::free_count() const {
  return slot_names(root_).size();
}

Population::Census Population::census() const {
  Census c;
  c.alive = list_names(root_ + "/alive").size();
  c.dead = list_names(root_ + "/dead").size();
  c.free = slot_names(root_).size();
  for (const std::string& name : list_names(root_ + "/staging")) {
    ++c.staging;
    try {
      if (holds_slot(root_ + "/staging/" + name)) ++c.held;
    } catch (const Gone&) {
    }
  }
  return c;
}

std::vector<Population::Training> Population::training() const {
  std::vector<Training> out;
  for (const std::string& name : list_names(root_ + "/staging")) {
    const std::string dir = root_ + "/staging/" + name;
    Training t;
    t.id = name;
    try {
      const auto st = stat_of(dir);
      if (!st) continue;  // published or discarded meanwhile
      t.heartbeat = to_seconds(st->st_mtim);
      if (auto text = read_text(dir + "/owner.json")) {
        const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
        if (j.is_object()) {
          t.host = j.value("host", std::string());
          t.pid = j.value("pid", 0);
          t.since = j.value("since", NAN);
        }
      }
    } catch (const Gone&) {
      continue;
    } catch (const nlohmann::json::exception&) {
      // a wrong type in owner.json: listed without its owner
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::optional<IndividualRecord> Population::read(const std::string& id) const {
  check_id(id, root_);
  for (const char* where : {"/alive/", "/dead/"}) {
    const std::string dir = root_ + where + id;
    const std::string source = dir + "/metrics.json";
    std::optional<std::string> text;
    try {
      text = read_text(source);
    } catch (const Gone&) {
    }
    if (!text) continue;  // not there, or moved on by a kill since
    IndividualRecord r = record_from_json(parse_json(*text, source), source);
    r.id = id;
    r.death_time = NAN;
    r.killed_by.clear();
    if (where[1] == 'd') {
      const std::string death_source = dir + "/death.json";
      if (auto death = read_text(death_source)) {
        const nlohmann::json d = parse_json(*death, death_source);
        r.death_time = get_number(d, "death_time", NAN, death_source);
        r.killed_by = get_string(d, "killed_by", death_source);
      }
      // Every folder in dead/ is dead, whatever death.json says.
      if (std::isnan(r.death_time)) {
        const auto st = stat_of(dir);
        r.death_time = st ? to_seconds(st->st_ctim) : 0;
      }
    }
    return r;
  }
  return std::nullopt;
}

std::string Population::dna_path(const std::string& id) const {
  check_id(id, root_);
  const std::string alive = root_ + "/alive/" + id + "/dna.json";
  if (exists(alive)) return alive;
  const std::string dead = root_ + "/dead/" + id + "/dna.json";
  return exists(dead) ? dead : alive;
}

std::string Population::weights_path(const std::string& id) const {
  check_id(id, root_);
  const std::string alive = root_ + "/alive/" + id + "/weights.evow";
  if (exists(alive)) return alive;
  const std::string dead = root_ + "/dead/" + id + "/weights.evow";
  return exists(dead) ? dead : alive;
}

std::vector<IndividualRecord> Population::all_individuals(std::vector<std::string>* damaged) const {
  std::vector<IndividualRecord> out;
  std::set<std::string> seen;
  const auto take = [&](const std::string& id) {
    try {
      if (auto r = read(id)) {
        seen.insert(id);
        out.push_back(std::move(*r));
      }
    } catch (const Gone&) {
    } catch (const Error& e) {
      if (damaged) damaged->push_back(e.what());
    }
  };
  for (const std::string& id : alive_ids()) take(id);
  std::vector<std::string> dead = list_names(root_ + "/dead");
  std::sort(dead.begin(), dead.end());
  for (const std::string& id : dead)
    if (!seen.count(id)) take(id);
  return out;
}

std::vector<std::string> Population::quarantine_damaged() {
  std::vector<std::string> moved;
  for (const std::string& id : alive_ids()) {
    std::string reason;
    try {
      read(id);
      continue;
    } catch (const Gone&) {
      continue;
    } catch (const Error& e) {
      reason = e.what();
    }
    // The kill is the store's own step (so its slot and the proof's invariants are kept); then
    // the dead folder, which no reader can use, moves aside.
    Staging child = begin_child();
    const bool killed = kill(child, id);
    abandon(std::move(child));  // the victim's slot goes back to free/
    if (!killed) continue;      // another process got there first
    const std::string quarantine = root_ + "/damaged";
    if (::mkdir(quarantine.c_str(), 0755) != 0 && errno != EEXIST)
      throw_sys("population: cannot create " + quarantine, errno);
    const std::string from = root_ + "/dead/" + id, to = quarantine + "/" + id;
    if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT)
      throw_sys("population: cannot move " + from + " to " + to, errno);
    moved.push_back(id + ": " + reason);
  }
  return moved;
}

std::size_t Population::recover(double stale_seconds) {
  const std::string staging = root_ + "/staging";
  const double now = fs_now(staging);
  std::size_t discarded = 0;
  for (const std::string& name : list_names(staging, true)) {
    const std::string path = staging + "/" + name;
    const auto st = stat_of(path);
    if (!st) continue;  // gone meanwhile
    const double mtime = to_seconds(st->st_mtim);
    if (starts_with(name, ".clock-")) {  // a probe of fs_now() whose process died
      if (now - mtime > 60) ::unlink(path.c_str());
      continue;
    }
    if (!S_ISDIR(st->st_mode)) continue;
    if (starts_with(name, ".trash-")) {  // holds nothing: a removal cut short, or in progress
      remove_tree(path);
      continue;
    }
    std::optional<nlohmann::json> owner;
    try {
      if (auto text = read_text(path + "/owner.json")) {
        nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
        if (j.is_object()) owner = std::move(j);
      }
    } catch (const Gone&) {
      continue;
    }
    const bool dead =
        owner ? !owner_alive(*owner, mtime, now, stale_seconds) : now - mtime > stale_seconds;
    if (!dead) continue;
    if (starts_with(name, ".new-")) {  // holds nothing yet
      remove_tree(path);
      continue;
    }
    if (name[0] == '.') continue;
    // Claim the folder by renaming it to an id of ours: of several recoverers, one wins. A second
    // one may still claim it from us before our owner.json is in (it read the dead owner's); then
    // our next step fails with Gone and it finishes the job. Every step below checks what is done.
    const std::string claimed_id = unique_id();
    const std::string claimed = staging + "/" + claimed_id;
    if (::rename(path.c_str(), claimed.c_str()) != 0) {
      if (errno == ENOENT) continue;
      throw Error("population: cannot claim " + path + ": " + sys_text(errno));
    }
    try {
      write_atomic(claimed, "owner.json", owner_json().dump(2) + "\n", false);
      settle(root_, claimed, name, durable_, std::nullopt);
      release_slot(root_, claimed, durable_);
      discard_dir(root_, claimed);
      ++discarded;
    } catch (const Gone&) {
    }
  }
  return discarded;
}

Population::FinalClaim Population::claim_final(double search_started, double stale_seconds,
                                               std::string* holder) {
  const std::string claim = root_ + "/final.claim";
  const std::string staging = root_ + "/staging";
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (const auto st = stat_of(claim)) {
      // Someone's claim: read whose, and whether it is finished.
      std::optional<nlohmann::json> owner, done;
      try {
        if (auto text = read_text(claim + "/owner.json")) {
          nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
          if (j.is_object()) owner = std::move(j);
        }
        if (auto text = read_text(claim + "/done.json")) {
          nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
          if (j.is_object()) done = std::move(j);
        }
      } catch (const Gone&) {
        continue;  // replaced meanwhile: look again
      }
      if (holder && owner)
        *holder = owner->value("host", std::string("?")) + " pid " +
                  std::to_string(owner->value("pid", 0));
      const double finished = done ? done->value("finished", 0.0) : NAN;
      if (done && finished >= search_started) return FinalClaim::kDone;
      const bool alive = !done && owner &&
                         owner_alive(*owner, to_seconds(st->st_mtim), fs_now(staging),
                                     stale_seconds);
      if (alive) return FinalClaim::kHeld;
      // Finished before this search began, or its holder died (or it is damaged: no owner): ours
      // to replace. Renamed away first, so of two replacers one wins and the other looks again.
      const std::string trash = staging + "/.trash-" + unique_id();
      if (::rename(claim.c_str(), trash.c_str()) != 0) {
        if (errno == ENOENT) continue;
        throw Error("population: cannot move the final-phase claim " + claim + " aside: " +
                    sys_text(errno));
      }
      remove_tree(trash);
      continue;
    }
    // No claim: ours, built under a hidden name with its owner.json and renamed into place whole
    // (a rename onto a folder that holds files fails: another claimant was first).
    const std::string tmp = staging + "/.new-" + unique_id();
    if (::mkdir(tmp.c_str(), 0755) != 0)
      throw Error("population: cannot create " + tmp + ": " + sys_text(errno));
    nlohmann::json owner = owner_json();
    owner["search_started"] = search_started;
    try {
      write_text(tmp + "/owner.json", owner.dump(2) + "\n", durable_);
    } catch (...) {
      remove_tree(tmp);
      throw;
    }
    if (::rename(tmp.c_str(), claim.c_str()) == 0) {
      if (durable_) fsync_path(root_, true);
      if (holder) *holder = owner.value("host", std::string("?")) + " pid " +
                            std::to_string(owner.value("pid", 0));
      return FinalClaim::kClaimed;
    }
    const int e = errno;
    remove_tree(tmp);
    if (e != EEXIST && e != ENOTEMPTY)
      throw Error("population: cannot claim the final phase (" + claim + "): " + sys_text(e));
  }
  throw Error("population: cannot claim the final phase of " + root_ +
              ": its claim changed hands 100 times in a row");
}

bool Population::heartbeat_final() const {
  return ::utimensat(AT_FDCWD, (root_ + "/final.claim").c_str(), nullptr, 0) == 0;
}

void Population::finish_final() {
  const nlohmann::json done = {{"finished", unix_now()}};
  write_atomic(root_ + "/final.claim", "done.json", done.dump() + "\n", durable_);
}

std::size_t Population::collect_garbage(double min_dead_seconds) {
  const double now = unix_now();
  std::size_t removed = 0;
  for (const std::string& id : list_names(root_ + "/dead")) {
    const std::string dir = root_ + "/dead/" + id;
    const std::string weights = dir + "/weights.evow";
    if (!exists(weights)) continue;
    double death = NAN;
    try {
      if (auto text = read_text(dir + "/death.json")) {
        const nlohmann::json d = nlohmann::json::parse(*text, nullptr, false);
        if (d.is_object() && d.contains("death_time") && d.at("death_time").is_number())
          death = d.at("death_time").get<double>();
      }
    } catch (const Gone&) {
      continue;
    }
    if (std::isnan(death) || now - death < min_dead_seconds) continue;
    if (::unlink(weights.c_str()) == 0)
      ++removed;
    else if (errno != ENOENT)
      throw Error("population: cannot remove " + weights + ": " + sys_text(errno));
  }
  return removed;
}

}  // namespace evo
