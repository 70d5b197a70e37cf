#include "storage/testing/sst_damage.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_reader.h"
#include "rocksdb/table_properties.h"

namespace rsd::testing {

absl::StatusOr<std::vector<std::string>> SstFilesOfFamily(const std::string& dir,
                                                          const std::string& family) {
  std::vector<std::pair<uint64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".sst") continue;
    rocksdb::SstFileReader reader{rocksdb::Options()};
    rocksdb::Status s = reader.Open(entry.path().string());
    if (!s.ok())
      return absl::InternalError(absl::StrCat(entry.path().string(), ": ", s.ToString()));
    if (reader.GetTableProperties()->column_family_name != family) continue;
    found.emplace_back(std::stoull(entry.path().stem().string()), entry.path().string());
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [number, path] : found) out.push_back(std::move(path));
  return out;
}

absl::Status FlipByte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  f.seekg(offset);
  char c = 0;
  if (!f.get(c)) return absl::OutOfRangeError(absl::StrCat(path, " has no byte ", offset));
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0xff));
  return f ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path));
}

}  // namespace rsd::testing
