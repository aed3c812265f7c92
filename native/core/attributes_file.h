// The attributes of an index's saved rows inside its index file (index_file.h): one section of
// the same kind in every index type's file, so that an opened index filters as the saved one.
//
// Section kAttributesSection, little-endian, byte-packed (read into memory, never mapped):
//   u32 layout version (1), u32 column count, u64 rows
//   per column, in schema order:
//     u8 type (0 uint, 1 number, 2 bool, 3 category), u8 multi (0 / 1), u16 zero,
//     u32 name bytes, the name (UTF-8),
//     u32 dictionary strings (category columns; 0 otherwise), each as u32 bytes + the bytes,
//     in code order
//   then per column, in schema order, its values for rows 0 .. rows-1:
//     single-valued: rows u8 (1 present, 0 missing), then rows values: u64 (uint),
//                    f64 (number), u8 (bool) or u32 dictionary code (category)
//     multi-valued:  rows + 1 u32 offsets (offsets[0] = 0, non-decreasing), then offsets[rows]
//                    u32 dictionary codes
// Row r of the section is row r of the file's index (each index type says which rows it
// saves). Every field is validated on reading, as hostile input: a malformed section is
// Error(CorruptFile), never an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attributes.h"

namespace ebrix {

class FileWriter;
class IndexFile;

// The section's kind, above every index type's own kinds.
constexpr uint32_t kAttributesSection = 64;

// The section bytes for rows rows[0 .. count) of the table as `snapshot` holds it (rows null:
// rows 0 .. count-1). Every row must be below snapshot.rows.
std::vector<uint8_t> encodeAttributes(const AttributeTable& table, const AttributeSnapshot& snapshot,
                                      const uint32_t* rows, size_t count);

// A table holding the section's rows; Error(CorruptFile) naming `path` when the section is not
// well formed or does not hold exactly `rows` rows.
std::shared_ptr<AttributeTable> decodeAttributes(const uint8_t* data, size_t bytes, size_t rows,
                                                 const std::string& path);

// The attributes section of an opened file (read and checksummed), or null when it has none.
std::shared_ptr<AttributeTable> readAttributes(const IndexFile& file, size_t rows);

}  // namespace ebrix
