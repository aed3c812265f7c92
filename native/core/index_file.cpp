#include "index_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>

#include "error.h"

namespace ebrix {
namespace {

constexpr char kMagic[8] = {'E', 'B', 'R', 'I', 'X', 'I', 'D', 'X'};
constexpr size_t kHeaderBytes = 128;
constexpr size_t kEntryBytes = 32;
constexpr size_t kMaxSections = 1024;
// Writes and reads go in pieces: one read or write call moves at most about 2 GiB on Linux.
constexpr size_t kIoChunk = size_t(1) << 30;

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ull;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t lane(uint64_t acc, uint64_t word) { return rotl(acc + word * kPrime2, 31) * kPrime1; }

void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t get64(const uint8_t* p) { return load64(p); }

size_t alignUp(size_t x) { return (x + kSectionAlignment - 1) / kSectionAlignment * kSectionAlignment; }

[[noreturn]] void ioError(const std::string& what, const std::string& path, int err) {
  throw Error(ErrorCode::Io, what + " " + path + ": " + std::strerror(err));
}

void writeAll(int fd, const void* data, size_t bytes, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, std::min(bytes, kIoChunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      ioError("Cannot write", path, errno);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

// Reads exactly `bytes` at `offset`; false at end of file.
bool readAt(int fd, void* dst, size_t bytes, uint64_t offset, const std::string& path) {
  auto* p = static_cast<uint8_t*>(dst);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, std::min(bytes, kIoChunk), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      ioError("Cannot read", path, errno);
    }
    if (n == 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

std::string directoryOf(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::atomic<uint64_t> tempCounter{0};
std::atomic<int64_t> failAfter{-1};

}  // namespace

void failNextWriteAfterForTesting(int64_t bytes) { failAfter.store(bytes); }

// The fuzzing build (CMake EBRIX_FUZZ) accepts any checksum, so that mutated inputs reach the
// structural checks behind them instead of stopping at the first checksum.
#if defined(EBRIX_FUZZING)
constexpr bool kCheckChecksums = false;
#else
constexpr bool kCheckChecksums = true;
#endif

uint64_t checksum64(const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  const uint8_t* const end = p + bytes;
  // Four independent lanes over 32-byte stripes keep the multiplier busy.
  uint64_t a = kPrime1 + kPrime2, b = kPrime2, c = 0, d = 0 - kPrime1;
  for (; end - p >= 32; p += 32) {
    a = lane(a, load64(p));
    b = lane(b, load64(p + 8));
    c = lane(c, load64(p + 16));
    d = lane(d, load64(p + 24));
  }
  uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18) + static_cast<uint64_t>(bytes);
  for (; end - p >= 8; p += 8) h = rotl(h ^ lane(0, load64(p)), 27) * kPrime1 + kPrime3;
  for (; p < end; ++p) h = rotl(h ^ (uint64_t{*p} * kPrime3), 11) * kPrime1;
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

FileWriter::FileWriter(std::string path, IndexType type) : path_(std::move(path)), type_(type) {}

void FileWriter::add(uint32_t kind, const void* data, size_t bytes) { sections_.push_back({kind, data, bytes}); }

void FileWriter::commit() {
  const size_t n = sections_.size();
  std::vector<uint8_t> head(kHeaderBytes + n * kEntryBytes, 0);
  size_t offset = alignUp(head.size());
  for (size_t i = 0; i < n; ++i) {
    uint8_t* e = head.data() + kHeaderBytes + i * kEntryBytes;
    put32(e, sections_[i].kind);
    put64(e + 8, offset);
    put64(e + 16, sections_[i].bytes);
    put64(e + 24, checksum64(sections_[i].data, sections_[i].bytes));
    offset = alignUp(offset + sections_[i].bytes);
  }
  // The file ends right after the last section (no trailing padding).
  const uint64_t fileBytes = n == 0 ? head.size() : get64(head.data() + kHeaderBytes + (n - 1) * kEntryBytes + 8) +
                                                       sections_.back().bytes;
  std::memcpy(head.data(), kMagic, 8);
  put32(head.data() + 8, kIndexFormatVersion);
  put32(head.data() + 12, static_cast<uint32_t>(type_));
  put32(head.data() + 16, static_cast<uint32_t>(n));
  put64(head.data() + 24, fileBytes);
  put64(head.data() + 112, checksum64(head.data() + kHeaderBytes, n * kEntryBytes));
  put64(head.data() + 120, checksum64(head.data(), 120));

  const std::string temp = path_ + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(++tempCounter);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) ioError("Cannot create", temp, errno);
  int64_t budget = failAfter.exchange(-1);
  auto write = [&](const void* data, size_t bytes) {
    if (budget >= 0) {
      if (static_cast<uint64_t>(budget) < bytes) {
        writeAll(fd, data, static_cast<size_t>(budget), temp);
        ioError("Cannot write", temp, ENOSPC);
      }
      budget -= static_cast<int64_t>(bytes);
    }
    writeAll(fd, data, bytes, temp);
  };
  try {
    write(head.data(), head.size());
    static const uint8_t zeros[kSectionAlignment] = {};
    size_t at = head.size();
    for (size_t i = 0; i < n; ++i) {
      const uint64_t start = get64(head.data() + kHeaderBytes + i * kEntryBytes + 8);
      write(zeros, start - at);
      write(sections_[i].data, sections_[i].bytes);
      at = start + sections_[i].bytes;
    }
    if (::fsync(fd) != 0) ioError("Cannot sync", temp, errno);
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(temp.c_str());
      ioError("Cannot close", temp, err);
    }
  } catch (...) {
    ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  if (::rename(temp.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    ioError("Cannot rename " + temp + " to", path_, err);
  }
  // The rename is durable once the directory entry is: sync the directory too.
  const std::string dir = directoryOf(path_);
  const int dirFd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd >= 0) {
    ::fsync(dirFd);
    ::close(dirFd);
  }
}

std::vector<uint8_t> IndexFile::readBetween(uint32_t kind, uint64_t minBytes, uint64_t maxBytes, const char* what) const {
  const SectionEntry* entry = find(kind);
  if (entry == nullptr || entry->bytes < minBytes || entry->bytes > maxBytes) {
    corrupt(std::string("missing or malformed ") + what + " section");
  }
  std::vector<uint8_t> bytes(entry->bytes);
  read(*entry, bytes.data());
  return bytes;
}

void IndexFile::corrupt(const std::string& what) const {
  throw Error(ErrorCode::CorruptFile, "Corrupt index file " + path_ + ": " + what);
}

std::shared_ptr<IndexFile> IndexFile::open(const std::string& path, bool map) {
  std::shared_ptr<IndexFile> file(new IndexFile());
  file->path_ = path;
  file->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file->fd_ < 0) ioError("Cannot open", path, errno);
  struct stat st {};
  if (::fstat(file->fd_, &st) != 0) ioError("Cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) file->corrupt("not a regular file");
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ < kHeaderBytes) {
    file->corrupt("too short for an index file (" + std::to_string(file->size_) + " bytes)");
  }
  uint8_t header[kHeaderBytes];
  if (!readAt(file->fd_, header, kHeaderBytes, 0, path)) file->corrupt("truncated header");
  if (std::memcmp(header, kMagic, 8) != 0) file->corrupt("not an ebrix index file (bad magic)");
  if (kCheckChecksums && get64(header + 120) != checksum64(header, 120)) file->corrupt("header checksum mismatch");
  const uint32_t version = get32(header + 8);
  if (version == 0 || version > kIndexFormatVersion) {
    file->corrupt("format version " + std::to_string(version) + ", this ebrix reads versions 1 to " +
                  std::to_string(kIndexFormatVersion));
  }
  const uint32_t type = get32(header + 12);
  if (type < 1 || type > 3) file->corrupt("unknown index type " + std::to_string(type));
  file->type_ = static_cast<IndexType>(type);
  const uint32_t count = get32(header + 16);
  if (count > kMaxSections) file->corrupt(std::to_string(count) + " sections");
  const uint64_t fileBytes = get64(header + 24);
  if (fileBytes != file->size_) {
    file->corrupt("the header says " + std::to_string(fileBytes) + " bytes, the file has " +
                  std::to_string(file->size_) + " (truncated or extended)");
  }
  const size_t tableBytes = size_t{count} * kEntryBytes;
  if (kHeaderBytes + tableBytes > file->size_) file->corrupt("truncated section table");
  std::vector<uint8_t> table(tableBytes);
  if (!readAt(file->fd_, table.data(), tableBytes, kHeaderBytes, path)) file->corrupt("truncated section table");
  if (kCheckChecksums && get64(header + 112) != checksum64(table.data(), tableBytes)) file->corrupt("section table checksum mismatch");
  std::set<uint32_t> kinds;
  const uint64_t firstData = alignUp(kHeaderBytes + tableBytes);
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = table.data() + size_t{i} * kEntryBytes;
    SectionEntry s;
    s.kind = get32(e);
    s.flags = get32(e + 4);
    s.offset = get64(e + 8);
    s.bytes = get64(e + 16);
    s.checksum = get64(e + 24);
    if (!kinds.insert(s.kind).second) file->corrupt("section kind " + std::to_string(s.kind) + " twice");
    if (s.offset % kSectionAlignment != 0 || s.offset < firstData || s.offset > file->size_ ||
        s.bytes > file->size_ - s.offset) {
      file->corrupt("section " + std::to_string(s.kind) + " lies outside the file");
    }
    file->sections_.push_back(s);
  }
  if (map) {
    void* m = ::mmap(nullptr, file->size_, PROT_READ, MAP_SHARED, file->fd_, 0);
    if (m == MAP_FAILED) ioError("Cannot map", path, errno);
    file->map_ = m;
  }
  return file;
}

IndexFile::~IndexFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const SectionEntry* IndexFile::find(uint32_t kind) const {
  for (const SectionEntry& s : sections_) {
    if (s.kind == kind) return &s;
  }
  return nullptr;
}

const SectionEntry& IndexFile::require(uint32_t kind, uint64_t bytes, const char* what) const {
  const SectionEntry* s = find(kind);
  if (s == nullptr) corrupt(std::string("no ") + what + " section");
  if (s->bytes != bytes) {
    corrupt(std::string("the ") + what + " section has " + std::to_string(s->bytes) + " bytes, expected " +
            std::to_string(bytes));
  }
  return *s;
}

void IndexFile::read(const SectionEntry& section, void* dst) const {
  if (!readAt(fd_, dst, section.bytes, section.offset, path_)) corrupt("truncated while reading");
  if (kCheckChecksums && checksum64(dst, section.bytes) != section.checksum) {
    corrupt("section " + std::to_string(section.kind) + " checksum mismatch");
  }
}

const uint8_t* IndexFile::view(const SectionEntry& section, bool verify) const {
  if (map_ == nullptr) throw Error(ErrorCode::Internal, "IndexFile::view on a file that is not mapped");
  const uint8_t* data = static_cast<const uint8_t*>(map_) + section.offset;
  if (kCheckChecksums && verify && checksum64(data, section.bytes) != section.checksum) {
    corrupt("section " + std::to_string(section.kind) + " checksum mismatch");
  }
  return data;
}

void IndexFile::verifyAll() const {
  std::vector<uint8_t> buffer;
  for (const SectionEntry& s : sections_) {
    if (map_ != nullptr) {
      view(s, true);
    } else {
      buffer.resize(s.bytes);
      read(s, buffer.data());
    }
  }
}

}  // namespace ebrix
