// The shim's words on the application's standard error, prefixed
// "s5socksify:". note() only with S5SOCKSIFY_DEBUG=1 (each routing decision
// and lease); warn() always, once per distinct text (a datagram that could
// not be sent through the broker). Neither ever names a credential: the
// shim never has one.
#pragma once

namespace s5::socksify {

void note(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void warn_once(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
bool debug_enabled();

}  // namespace s5::socksify
