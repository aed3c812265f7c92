// Helpers for tests of index files: a scratch directory, whole-file reads and writes, and the
// section table of a file's bytes, so that a test can damage one section and (to reach the
// loaders' own checks behind the checksums) seal the file again.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../index_file.h"

namespace ebrix::test {

// A fresh directory under /tmp, removed with its files at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    char pattern[] = "/tmp/ebrix-file-test-XXXXXX";
    path = mkdtemp(pattern);
  }
  ~TempDir() {
    for (const std::string& f : files()) std::remove((path + "/" + f).c_str());
    rmdir(path.c_str());
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* d = opendir(path.c_str())) {
      while (dirent* e = readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) out.push_back(e->d_name);
      }
      closedir(d);
    }
    return out;
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

inline std::vector<uint8_t> readBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void writeBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// The section table of a well-formed file's bytes (index_file.h: 128-byte header, then
// 32-byte entries).
inline std::vector<SectionEntry> sectionsOf(const std::vector<uint8_t>& bytes) {
  uint32_t count;
  std::memcpy(&count, bytes.data() + 16, 4);
  std::vector<SectionEntry> out(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = bytes.data() + 128 + 32 * size_t{i};
    std::memcpy(&out[i].kind, e, 4);
    std::memcpy(&out[i].flags, e + 4, 4);
    std::memcpy(&out[i].offset, e + 8, 8);
    std::memcpy(&out[i].bytes, e + 16, 8);
    std::memcpy(&out[i].checksum, e + 24, 8);
  }
  return out;
}

inline const SectionEntry* sectionOf(const std::vector<SectionEntry>& sections, uint32_t kind) {
  for (const SectionEntry& s : sections) {
    if (s.kind == kind) return &s;
  }
  return nullptr;
}

// Recomputes every section checksum, the table's and the header's, after an edit.
inline void reseal(std::vector<uint8_t>& bytes) {
  const std::vector<SectionEntry> sections = sectionsOf(bytes);
  for (size_t i = 0; i < sections.size(); ++i) {
    const uint64_t sum = checksum64(bytes.data() + sections[i].offset, sections[i].bytes);
    std::memcpy(bytes.data() + 128 + 32 * i + 24, &sum, 8);
  }
  const uint64_t table = checksum64(bytes.data() + 128, 32 * sections.size());
  std::memcpy(bytes.data() + 112, &table, 8);
  const uint64_t header = checksum64(bytes.data(), 120);
  std::memcpy(bytes.data() + 120, &header, 8);
}

}  // namespace ebrix::test
