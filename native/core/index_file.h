// The index file format: one versioned, checksummed container for every index type, written
// atomically and readable either into memory or by mapping it.
//
// Layout (little-endian; every offset and length in bytes):
//
//   0     FileHeader (128 bytes)
//           magic "EBRIXIDX", formatVersion, indexType, sectionCount, reserved,
//           fileBytes (the whole file: a shorter file was truncated),
//           tableChecksum (of the section table), headerChecksum (of bytes 0..119)
//   128   the section table: sectionCount SectionEntry of 32 bytes
//           kind, flags (0), offset, bytes, checksum (of the section's bytes)
//   ...   the sections, each at an offset that is a multiple of 64 (so that a mapped
//         section is aligned for full-width vector loads), zero padding between them
//
// The checksum is checksum64 below (a 64-bit multiply-rotate hash over 32-byte stripes).
// What a section holds is the index type's business (flat.cpp documents FlatIndex's);
// kinds are unique within a file.
//
// Safety of reading: open() checks the header (magic, version, checksum), that the table
// fits and matches its checksum, and that every section lies inside the file and is aligned;
// a section's own checksum is checked when it is read, or when a mapped view asks for it.
// Anything else is the caller's to validate (sizes against dim and count). So a truncated,
// corrupted or hostile file is an Error(CorruptFile), never an out-of-bounds read.
//
// Atomic writes: FileWriter writes a temporary file beside the target, fsyncs it, renames it
// over the target and fsyncs the directory. A failure at any point leaves the previous file
// as it was (and removes the temporary). Because a save never writes into an existing file,
// an index mapped from the old file keeps reading consistent pages after a new save.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ebrix {

enum class IndexType : uint32_t { Flat = 1, IvfPq = 2, Hnsw = 3 };

constexpr uint32_t kIndexFormatVersion = 1;
constexpr size_t kSectionAlignment = 64;

uint64_t checksum64(const void* data, size_t bytes);

struct SectionEntry {
  uint32_t kind = 0;
  uint32_t flags = 0;
  uint64_t offset = 0;
  uint64_t bytes = 0;
  uint64_t checksum = 0;
};

// Collects sections, then writes them all at commit(). The data pointers must stay valid
// until then. Throws Error(Io) naming the path and the system's reason.
class FileWriter {
 public:
  FileWriter(std::string path, IndexType type);
  void add(uint32_t kind, const void* data, size_t bytes);
  void commit();

 private:
  struct Pending {
    uint32_t kind;
    const void* data;
    size_t bytes;
  };
  std::string path_;
  IndexType type_;
  std::vector<Pending> sections_;
};

// Tests only: the next commit() fails with Error(Io) once it has written this many bytes of
// its temporary file, as a full disk would; negative (the default) never.
void failNextWriteAfterForTesting(int64_t bytes);

class IndexFile {
 public:
  // Opens and validates the header and section table. map: the file is mapped read-only
  // (and stays mapped while this object lives), else sections are read on demand.
  // Throws Error(Io) when the file cannot be opened, Error(CorruptFile) when it is not a
  // well-formed index file, or one of a newer format version.
  static std::shared_ptr<IndexFile> open(const std::string& path, bool map);
  ~IndexFile();
  IndexFile(const IndexFile&) = delete;
  IndexFile& operator=(const IndexFile&) = delete;

  const std::string& path() const { return path_; }
  IndexType type() const { return type_; }
  bool mapped() const { return map_ != nullptr; }

  // The section of a kind, or null.
  const SectionEntry* find(uint32_t kind) const;
  // The section of a kind, which must exist and hold exactly `bytes` bytes; `what` names it
  // in the CorruptFile error otherwise.
  const SectionEntry& require(uint32_t kind, uint64_t bytes, const char* what) const;
  // Copies a section into dst (section.bytes bytes) and checks its checksum.
  void read(const SectionEntry& section, void* dst) const;
  // The bytes of the section of a kind, which must exist and hold from minBytes to maxBytes
  // bytes (checksum checked); `what` names it in the CorruptFile error otherwise.
  std::vector<uint8_t> readBetween(uint32_t kind, uint64_t minBytes, uint64_t maxBytes, const char* what) const;
  // A mapped file's section, its checksum checked first when `verify`.
  const uint8_t* view(const SectionEntry& section, bool verify) const;
  // Checks every section's checksum (a mapped file's pages are read once).
  void verifyAll() const;

 private:
  IndexFile() = default;
  [[noreturn]] void corrupt(const std::string& what) const;

  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  IndexType type_ = IndexType::Flat;
  std::vector<SectionEntry> sections_;
  void* map_ = nullptr;
};

}  // namespace ebrix
