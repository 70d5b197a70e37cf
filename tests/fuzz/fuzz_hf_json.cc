// Hugging Face folders' JSON: config.json (worker/model/hf_internal.h) and tokenizer.json
// (worker/model/tokenizer.h). The first input byte picks which.
#include "tests/fuzz/fuzz.h"
#include "worker/model/hf_internal.h"
#include "worker/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) {
    (void)rsd::hf::ParseConfigJson("config.json", text);
  } else {
    (void)rsd::ParseHfTokenizerJson("tokenizer.json", text, "");
  }
  return 0;
}

namespace rsd::fuzz {
std::vector<std::string> FuzzSeeds() {
  return {
      std::string("\x01") +
          R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_hidden_layers":2,)"
          R"("num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,)"
          R"("vocab_size":32,"max_position_embeddings":128,"rms_norm_eps":1e-5,)"
          R"("rope_theta":10000.0,"tie_word_embeddings":true})",
      std::string("\x00", 1) +
          R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},)"
          R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false},)"
          R"("added_tokens":[{"id":3,"content":"<s>","special":true}]})",
  };
}
}  // namespace rsd::fuzz
