// The library's per-process tables (leases, checked sockets, direct
// associations in progress): one instance each, made on first use and never
// destroyed, since threads may still call in while exit() runs destructors.
//
// fork() and a table's lock: a child inherits memory, not threads, so a lock
// that another thread held at fork() would stay held in the child forever.
// A pthread_atfork handler therefore takes the table's lock before fork()
// and releases it in both processes after. That is only sound because these
// locks are held for memory work and non-blocking syscalls, never across a
// wait: fork() never waits for the network. The broker connection
// (broker_link.cpp) is held across bus calls, so it does the opposite: no
// lock across fork(), and the child forgets the parent's connection.
#pragma once

#include <pthread.h>

namespace s5::client {

// T: default-constructible, with lock() and unlock() that never block on
// I/O.
template <typename T>
T& process_global() {
    static T* const instance = [] {
        auto* p = new T;
        pthread_atfork([] { process_global<T>().lock(); }, [] { process_global<T>().unlock(); },
                       [] { process_global<T>().unlock(); });
        return p;
    }();
    return *instance;
}

}  // namespace s5::client
