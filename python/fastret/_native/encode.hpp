// Python object -> JSON, for the bindings. Needs the GIL.
#pragma once
#include <pybind11/pybind11.h>

#include <span>
#include <string>
#include <string_view>

#include "fastret/redact.hpp"

namespace fastret::py_bind {

struct encode_options {
    std::size_t max_depth = 100;   // deeper containers become a marker object
    bool bytes_base64 = false;     // bytes as base64 instead of UTF-8 with replacement
    const redactor* redact = nullptr;  // applied while encoding: secrets never reach a buffer
    key_cache* keys = nullptr;  // the redactor's answers per key, kept across a batch (optional)
};

// Appends `obj` to `out` as one JSON value. Never throws on odd data: unknown types via str(),
// invalid UTF-8 and lone surrogates replaced, cycles and excessive depth cut with a marker.
void append_python(std::string& out, pybind11::handle obj, const encode_options& opts);

std::string encode_python(pybind11::handle obj, const encode_options& opts);

// The values of a Salt event's "jid", "fun" and "success" keys (new references, or null when
// absent), picked up while the event's data dict is encoded: looking them up separately
// would hash and probe the dict three more times per event.
struct event_fields {
    pybind11::object jid, fun, success;
};

// append_python() for an event's data; fills `fields` when `data` is a dict.
void append_event_data(std::string& out, pybind11::handle data, const encode_options& opts,
                       event_fields& fields);

// Brings the objects reachable from `roots` (a few container levels deep) into the CPU cache,
// before a batch of them is encoded. Objects that Salt built a while ago are mostly no longer
// cached, and walking them one by one is a chain of cache misses: encoding a typical event
// cold takes over twice as long as encoding it again. Requested level by level across the
// whole batch, the misses overlap. Only reads; runs no Python code. Needs the GIL.
void warm_up(std::span<PyObject* const> roots);

// True if `s` is a str equal to `ascii` (cheap for the usual compact ASCII str).
bool str_equals(PyObject* s, std::string_view ascii);

// Sets `out` to a header field (jid, minion id, fun, tag) as UTF-8: None is empty, other types
// via str(), lone surrogates kept as bytes for the JSON layer to replace. Reuses out's storage.
void assign_text(std::string& out, pybind11::handle h);

void register_encode(pybind11::module_& m);

}  // namespace fastret::py_bind
