// The helpers every process shares: structured log lines and the dashed command-line spelling
// (flag files, --help).
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/common/flags.h"
#include "storage/common/log.h"
#include "tests/support/test_util.h"

ABSL_FLAG(int, test_max_tokens, 1, "a flag spelled --test-max-tokens on the command line");
ABSL_FLAG(std::string, test_data_dir, "", "another");

namespace rsd {
namespace {

TEST(LogTest, JsonLinesAreJsonWithTheFieldsAndTextLinesQuoteWhatNeedsIt) {
  const std::string json =
      log::Render(true, "session moved", {{"session", "ab12"}, {"note", "a \"quoted\"\nline"}});
  const nlohmann::json j = nlohmann::json::parse("{" + json + "}");
  EXPECT_EQ(j["msg"], "session moved");
  EXPECT_EQ(j["session"], "ab12");
  EXPECT_EQ(j["note"], "a \"quoted\"\nline");
  EXPECT_EQ(log::Render(false, "turn done", {{"session", "ab12"}, {"error", "x y"}}),
            "turn done session=ab12 error=\"x y\"");
  EXPECT_EQ(log::Init("t", "xml", "info").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(log::Init("t", "json", "loud").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(log::Init("t", "text", "warn").ok());
}

TEST(FlagsTest, FlagFilesTakeTheDashedSpellingAndHelpListsIt) {
  const std::string dir = testing::MakeTempDir("rsd-flags");
  const std::string file = dir + "/flags";
  std::ofstream(file) << "# comment\n\n--test-max-tokens=7\n--test_data_dir=/tmp/x\n";
  std::vector<std::string> args = {"prog", "--flagfile", file, "positional"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  const std::vector<char*> rest =
      ParseDashedCommandLine(static_cast<int>(argv.size()), argv.data());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_max_tokens), 7);
  EXPECT_EQ(absl::GetFlag(FLAGS_test_data_dir), "/tmp/x");
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(std::string(rest[1]), "positional");
  const std::string help = DashedFlagHelp();
  EXPECT_NE(help.find("--test-max-tokens\n"), std::string::npos) << help;
  EXPECT_NE(help.find("(default: \"1\")"), std::string::npos) << help;
  EXPECT_EQ(help.find("--test_max_tokens"), std::string::npos);
  EXPECT_EQ(help.find("--undefok"), std::string::npos);  // Abseil's own flags are left out
}

}  // namespace
}  // namespace rsd
