// What a broker that cannot start (invalid configuration, exit 78) does for
// the clients whose calls started it.
//
// Under D-Bus activation, dbus-daemon queues a client's call until the name
// appears, and systemd 252 does not tell it when the start job fails: the
// client would wait out dbus-daemon's service_start_timeout (25 s) and get a
// time-out. So before exiting, the broker takes its name for a moment,
// answers every call that arrives with the error dbus-daemon itself gives
// for a service that exited (org.freedesktop.DBus.Error.Spawn.ChildExited;
// libs5client: ECONNREFUSED / S5_ENOSERV, "s5brokerd is not running"), and
// exits once no call has come for a short while. No detail of the
// configuration goes on the bus: the journal has it.
#pragma once

namespace s5d {

// Connects to the system (or session) bus, owns `bus_name` if nobody does,
// refuses calls until 100 ms pass without one (at most 2 s), disconnects.
// Best effort: every failure just ends it.
void refuse_calls_until_quiet(const char* bus_name, bool session_bus);

}  // namespace s5d
