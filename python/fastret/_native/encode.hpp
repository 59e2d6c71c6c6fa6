// Python object -> JSON, for the bindings. Needs the GIL.
#pragma once
#include <pybind11/pybind11.h>

#include <string>

#include "fastret/json_writer.hpp"

namespace fastret::py_bind {

struct encode_options {
    std::size_t max_depth = 100;   // deeper containers become a marker object
    bool bytes_base64 = false;     // bytes as base64 instead of UTF-8 with replacement
};

// Writes `obj` as one JSON value. Never throws on odd data: unknown types via str(),
// invalid UTF-8 and lone surrogates replaced, cycles and excessive depth cut with a marker.
void write_python(json_writer& w, pybind11::handle obj, const encode_options& opts,
                  std::size_t depth = 0);

std::string encode_python(pybind11::handle obj, const encode_options& opts);

void register_encode(pybind11::module_& m);

}  // namespace fastret::py_bind
