// rsd-mkmodel: writes the synthetic test models of tests/support/synthetic_model.h as real files,
// <name>.gguf and <name>-hf/, for tools/goldens/synthetic_goldens.py and for trying the CLI on
// something tiny. The same catalog name always gives byte-identical files.
//
//   rsd-mkmodel --out=DIR [--models=all|mha,gqa,...] [--dtype=q8_0] [--formats=gguf,hf] [--list]
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "tests/support/synthetic_model.h"

ABSL_FLAG(std::string, out, "", "directory to write the models into (created if missing)");
ABSL_FLAG(std::string, models, "all", "comma-separated catalog names, or 'all'");
ABSL_FLAG(std::string, dtype, "",
          "override the matrix type (f32, f16, bf16, q8_0, q4_0, q4_1); names get a -<dtype> "
          "suffix unless the entry already has that type");
ABSL_FLAG(std::string, formats, "gguf,hf", "which copies to write: gguf, hf or both");
ABSL_FLAG(bool, list, false, "print the catalog (name, description) and exit");
ABSL_FLAG(std::string, shape, "",
          "instead of the catalog, one model of a real model's shape with random weights, for "
          "benchmarks where memory bandwidth is the limit: llama-3.2-1b (16 layers, d 2048, 32 "
          "heads, 8 KV heads, d_ff 8192, vocab 128256; tied embeddings), written as "
          "<shape>-<dtype>.gguf (GGUF only)");

namespace {

using rsd::testing::SyntheticCatalogEntry;

// A benchmark-sized model of a real shape (not in the test catalog: it is large).
int WriteShape(const std::string& out) {
  const std::string shape = absl::GetFlag(FLAGS_shape);
  if (shape != "llama-3.2-1b") {
    std::fprintf(stderr, "rsd-mkmodel: unknown --shape '%s' (llama-3.2-1b)\n", shape.c_str());
    return 2;
  }
  const std::string dtype =
      absl::GetFlag(FLAGS_dtype).empty() ? "q4_0" : absl::GetFlag(FLAGS_dtype);
  std::optional<rsd::DType> t = rsd::testing::ParseDTypeName(dtype);
  if (!t) {
    std::fprintf(stderr, "rsd-mkmodel: unknown --dtype '%s'\n", dtype.c_str());
    return 2;
  }
  rsd::testing::SyntheticModelOptions o;
  o.name = shape + "-" + dtype;
  o.architecture = "llama";
  o.n_layers = 16;
  o.d_model = 2048;
  o.n_heads = 32;
  o.n_kv_heads = 8;
  o.d_ff = 8192;
  o.vocab = 128256;
  o.context_length = 2048;
  o.tied = true;
  o.weight_dtype = *t;
  o.rope_theta = 500000.0f;
  o.seed = 1;
  rsd::testing::SyntheticModel model(o);
  const absl::Status s = model.WriteGguf(out + "/" + o.name + ".gguf");
  if (!s.ok()) {
    std::fprintf(stderr, "rsd-mkmodel: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("%s\n", o.name.c_str());
  return 0;
}

int Run() {
  const auto& catalog = rsd::testing::SyntheticModelCatalog();
  if (absl::GetFlag(FLAGS_list)) {
    for (const SyntheticCatalogEntry& e : catalog) {
      std::printf("%-18s %s\n", e.name.c_str(), e.description.c_str());
    }
    return 0;
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fprintf(stderr, "rsd-mkmodel: --out is required\n");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_shape).empty()) return WriteShape(out);
  std::vector<SyntheticCatalogEntry> chosen;
  if (absl::GetFlag(FLAGS_models) == "all") {
    chosen = catalog;
  } else {
    std::vector<std::string> names = absl::StrSplit(absl::GetFlag(FLAGS_models), ',');
    for (const std::string& name : names) {
      const SyntheticCatalogEntry* e = rsd::testing::FindSyntheticModel(name);
      if (e == nullptr) {
        std::fprintf(stderr, "rsd-mkmodel: no catalog model '%s' (see --list)\n", name.c_str());
        return 2;
      }
      chosen.push_back(*e);
    }
  }
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (!dtype.empty()) {
    std::optional<rsd::DType> t = rsd::testing::ParseDTypeName(dtype);
    if (!t) {
      std::fprintf(stderr, "rsd-mkmodel: unknown --dtype '%s'\n", dtype.c_str());
      return 2;
    }
    for (SyntheticCatalogEntry& e : chosen) {
      if (e.options.weight_dtype == *t) continue;
      e.options.weight_dtype = *t;
      e.name = e.options.name = e.name + "-" + dtype;
    }
  }
  const std::string formats = absl::GetFlag(FLAGS_formats);
  const bool gguf = formats.find("gguf") != std::string::npos;
  const bool hf = formats.find("hf") != std::string::npos;
  for (const SyntheticCatalogEntry& e : chosen) {
    rsd::testing::SyntheticModel model(e.options);
    absl::Status s;
    if (gguf) s.Update(model.WriteGguf(out + "/" + e.name + ".gguf"));
    if (hf) s.Update(model.WriteHfFolder(out + "/" + e.name + "-hf"));
    if (!s.ok()) {
      std::fprintf(stderr, "rsd-mkmodel: %s\n", s.ToString().c_str());
      return 1;
    }
    std::printf("%s\n", e.name.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Writes the synthetic test models as GGUF files and HF folders.");
  absl::ParseCommandLine(argc, argv);
  return Run();
}
