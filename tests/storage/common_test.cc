// The helpers every process shares: structured log lines and the dashed command-line spelling
// (flag files, --help).
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/common/flags.h"
#include "storage/common/listen_policy.h"
#include "storage/common/log.h"
#include "tests/support/test_util.h"

ABSL_FLAG(int, test_max_tokens, 1, "a flag spelled --test-max-tokens on the command line");
ABSL_FLAG(std::string, test_data_dir, "", "another");

namespace rsd {
namespace {

TEST(ListenPolicyTest, OnlyLoopbackAddressesServePlaintextWithoutInsecureListen) {
  for (const char* a : {"127.0.0.1:50051", "127.1.2.3:1", "localhost:80", "[::1]:7001", "::1",
                        "ipv6:[::1]:7001", "ipv4:127.0.0.1:9"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
    EXPECT_TRUE(CheckPlaintextListen("--listen", a, false).ok()) << a;
  }
  for (const char* a :
       {"0.0.0.0:50051", ":8080", "[::]:7001", "10.0.0.5:1", "128.0.0.1:1", "127.0.0.256:1",
        "127.0.0:1", "example.com:80", "localhost.evil:80", "", "[fe80::1]:80"}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
    const absl::Status s = CheckPlaintextListen("--http-listen", a, false);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << a;
    EXPECT_NE(s.message().find("--insecure-listen"), std::string::npos) << s;
    EXPECT_TRUE(CheckPlaintextListen("--http-listen", a, true).ok()) << a;
  }
  EXPECT_TRUE(CheckListenFlags(false, {{"--listen", "127.0.0.1:1"}, {"--http-listen", ""}}).ok());
  EXPECT_EQ(CheckListenFlags(false, {{"--listen", "127.0.0.1:1"}, {"--http-listen", ":9"}}).code(),
            absl::StatusCode::kInvalidArgument);
}

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
