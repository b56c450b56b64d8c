// Text from elsewhere (a config key, a server's reply, a bus message) on one
// line: every control character is written as \xNN, so that a value cannot
// forge a second journal line or a terminal escape. The one rule for the
// daemon's log, its config errors and s5brokerctl's output.
#pragma once

#include <string>
#include <string_view>

namespace s5 {

std::string one_line(std::string_view s);

}  // namespace s5
