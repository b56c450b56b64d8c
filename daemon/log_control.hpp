// org.freedesktop.LogControl1 at /org/freedesktop/LogControl1: the log
// level and target, readable by all, writable by root (bus policy denies
// Properties.Set to others; the setter checks again).
#pragma once

#include <memory>

namespace sdbus { class IConnection; }

namespace s5d {

class LogControlObject;
class BusCreds;

class LogControl {
public:
    LogControl(sdbus::IConnection& conn, const BusCreds& creds);
    ~LogControl();

private:
    std::unique_ptr<LogControlObject> obj_;
};

}  // namespace s5d
