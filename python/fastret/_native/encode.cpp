#include "encode.hpp"

#include <pybind11/stl.h>

namespace py = pybind11;

namespace fastret::py_bind {

namespace {

// UTF-8 of a str. A str with lone surrogates (from surrogateescape-decoded bytes) cannot be
// encoded strictly; those code points become U+FFFD.
void write_str(json_writer& w, PyObject* s, bool as_key) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(s, &n);
    if (p) {
        as_key ? w.key({p, static_cast<std::size_t>(n)}) : w.string({p, static_cast<std::size_t>(n)});
        return;
    }
    PyErr_Clear();
    PyObject* b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (!b) {
        PyErr_Clear();
        as_key ? w.key("<unencodable>") : w.string("<unencodable>");
        return;
    }
    std::string_view v(PyBytes_AS_STRING(b), static_cast<std::size_t>(PyBytes_GET_SIZE(b)));
    as_key ? w.key(v) : w.string(v);
    Py_DECREF(b);
}

// str(obj), never raising: an object whose __str__ fails is named by its type.
void write_via_str(json_writer& w, PyObject* obj, bool as_key) {
    PyObject* s = PyObject_Str(obj);
    if (!s) {
        PyErr_Clear();
        std::string text = std::string("<unprintable ") + Py_TYPE(obj)->tp_name + ">";
        as_key ? w.key(text) : w.string(text);
        return;
    }
    write_str(w, s, as_key);
    Py_DECREF(s);
}

void write_key(json_writer& w, PyObject* k) {
    // Same key spelling as json.dumps: str as is, True/False/None as JSON literals, others str().
    if (PyUnicode_Check(k)) return write_str(w, k, true);
    if (k == Py_True) return w.key("true");
    if (k == Py_False) return w.key("false");
    if (k == Py_None) return w.key("null");
    if (PyBytes_Check(k)) {
        return w.key({PyBytes_AS_STRING(k), static_cast<std::size_t>(PyBytes_GET_SIZE(k))});
    }
    write_via_str(w, k, true);
}

void write_depth_marker(json_writer& w, PyObject* obj) {
    w.begin_object();
    w.key(truncation_marker_key);
    w.string("depth");
    w.key("type");
    w.string(Py_TYPE(obj)->tp_name);
    w.end_object();
}

}  // namespace

void write_python(json_writer& w, py::handle h, const encode_options& opts, std::size_t depth) {
    PyObject* obj = h.ptr();
    if (obj == Py_None) return w.null();
    if (obj == Py_True) return w.boolean(true);
    if (obj == Py_False) return w.boolean(false);
    if (PyUnicode_Check(obj)) return write_str(w, obj, false);
    if (PyLong_Check(obj)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (!overflow && !(v == -1 && PyErr_Occurred())) return w.integer(v);
        PyErr_Clear();
        PyObject* s = PyObject_Str(obj);  // exact digits of a big int
        if (s) {
            Py_ssize_t n = 0;
            const char* p = PyUnicode_AsUTF8AndSize(s, &n);
            if (p) w.raw_number({p, static_cast<std::size_t>(n)});
            else { PyErr_Clear(); w.null(); }
            Py_DECREF(s);
        } else {
            PyErr_Clear();
            w.null();
        }
        return;
    }
    if (PyFloat_Check(obj)) return w.number(PyFloat_AS_DOUBLE(obj));
    if (PyBytes_Check(obj) || PyByteArray_Check(obj)) {
        std::string_view v = PyBytes_Check(obj)
            ? std::string_view(PyBytes_AS_STRING(obj), static_cast<std::size_t>(PyBytes_GET_SIZE(obj)))
            : std::string_view(PyByteArray_AS_STRING(obj), static_cast<std::size_t>(PyByteArray_GET_SIZE(obj)));
        return opts.bytes_base64 ? w.base64_string(v) : w.string(v);
    }
    bool is_dict = PyDict_Check(obj);
    bool is_seq = PyList_Check(obj) || PyTuple_Check(obj) || PyAnySet_Check(obj);
    if (!is_dict && !is_seq) return write_via_str(w, obj, false);
    if (depth >= opts.max_depth) return write_depth_marker(w, obj);
    if (is_dict) {
        w.begin_object();
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        // A dict subclass may override items(); plain iteration over the storage is what
        // json.dumps does too.
        while (PyDict_Next(obj, &pos, &k, &v)) {
            write_key(w, k);
            write_python(w, v, opts, depth + 1);
        }
        w.end_object();
        return;
    }
    w.begin_array();
    if (PyList_Check(obj)) {
        // A leaf's __str__ runs Python code that could mutate the list: the size is re-read
        // each step and the item held by a reference while it is written.
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(obj); ++i) {
            PyObject* item = PyList_GET_ITEM(obj, i);
            Py_INCREF(item);
            write_python(w, item, opts, depth + 1);
            Py_DECREF(item);
        }
    } else if (PyTuple_Check(obj)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(obj); ++i)
            write_python(w, PyTuple_GET_ITEM(obj, i), opts, depth + 1);
    } else {
        PyObject* it = PyObject_GetIter(obj);
        if (it) {
            while (PyObject* item = PyIter_Next(it)) {
                write_python(w, item, opts, depth + 1);
                Py_DECREF(item);
            }
            Py_DECREF(it);
        }
        PyErr_Clear();
    }
    w.end_array();
}

std::string encode_python(py::handle obj, const encode_options& opts) {
    json_writer w;
    w.reserve(1024);  // a typical return or event: saves the string's regrowth steps
    write_python(w, obj, opts);
    return w.take();
}

void register_encode(py::module_& m) {
    m.def(
        "encode_json",
        [](py::handle obj, std::size_t max_depth, bool bytes_base64) {
            return encode_python(obj, {max_depth, bytes_base64});
        },
        py::arg("obj"), py::arg("max_depth") = 100, py::arg("bytes_base64") = false,
        "Encode a Python object as JSON text the way records are encoded: never fails; bytes as "
        "UTF-8 with replacement (or base64), other types via str(), depth beyond max_depth cut "
        "with a {\"__fastret_truncated__\": \"depth\"} marker.");
    m.def("limit_payload_size",
          [](std::string payload, std::size_t max_bytes) {
              limit_payload_size(payload, max_bytes);
              return payload;
          });
}

}  // namespace fastret::py_bind
