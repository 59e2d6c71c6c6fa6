// Python objects to JSON text, written straight into the record's payload string.
//
// This walk is most of what a caller of event_return() pays per event, so it avoids the
// generic json_writer's per-value bookkeeping: each container writes its own separators,
// bytes are stored through a cursor (json_appender), and ASCII str objects are read in place.
// The output is the same as json_writer's, byte for byte.
#include "encode.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "fastret/json_writer.hpp"

namespace py = pybind11;

namespace fastret::py_bind {

namespace {

class encoder {
public:
    // Appends to `out` (trimmed when the encoder goes away, or at finish()).
    encoder(std::string& out, const encode_options& opts)
        : out_(out),
          opts_(opts),
          value_rules_(opts.redact && opts.redact->has_value_rules()),
          field_rules_(opts.redact && opts.redact->has_field_rules()),
          path_rules_(opts.redact && opts.redact->has_path_rules()),
          keys_(opts.keys) {
        if (!keys_ && field_rules_ && !path_rules_) keys_ = &own_keys_.emplace();
    }

    void value(PyObject* obj, std::size_t depth);
    // A dict's members, also reporting the values of the event header keys (top level only).
    void dict(PyObject* obj, std::size_t depth, event_fields* fields);
    void finish() { out_.finish(); }

private:
    void put(char c) { out_.put(c); }
    void put(std::string_view v) { out_.put(v); }
    void text(std::string_view s) { out_.string(s); }
    void str(PyObject* s);
    // A str value (not a key): the value rules of the redactor, if any, apply.
    void str_value(PyObject* s);
    // A dict member under the redactor's field rules: false when it is left out.
    bool member(PyObject* k, PyObject* v, std::size_t depth, bool first);
    void key(PyObject* k);
    void via_str(PyObject* obj);
    void integer(PyObject* obj);
    void number(double v);
    void bytes(std::string_view v);
    void sequence(PyObject* obj, std::size_t depth);
    void sequence_items(PyObject* obj, std::size_t depth);
    void depth_marker(PyObject* obj);

    json_appender out_;
    const encode_options& opts_;
    // What the redactor has, asked once per encode (the calls cross into libfastret).
    const bool value_rules_, field_rules_, path_rules_;
    std::optional<key_cache> own_keys_;  // when the caller has none: keys repeat within an object
    key_cache* keys_;
    // Keys from the payload's root to the container being written ("*" for array elements),
    // kept only when the redactor has path rules.
    std::vector<std::string> path_;
    std::vector<std::string_view> path_view_;
    std::string scratch_;
};

// UTF-8 of a str key or value for matching (ASCII in place, else the cached UTF-8); empty
// when it has none (lone surrogates).
std::string_view utf8_of(PyObject* s) {
    if (PyUnicode_IS_COMPACT_ASCII(s))
        return {static_cast<const char*>(PyUnicode_DATA(s)), static_cast<std::size_t>(PyUnicode_GET_LENGTH(s))};
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(s, &n);
    if (!p) {
        PyErr_Clear();
        return {};
    }
    return {p, static_cast<std::size_t>(n)};
}

void encoder::str_value(PyObject* s) {
    if (!value_rules_) return str(s);
    const auto view = utf8_of(s);
    if (!view.empty() && opts_.redact->redact_value(view, scratch_)) return text(scratch_);
    str(s);
}

bool encoder::member(PyObject* k, PyObject* v, std::size_t depth, bool first) {
    const redactor& r = *opts_.redact;
    std::string key_text;
    std::string_view key_view;
    if (PyUnicode_Check(k)) key_view = utf8_of(k);
    else key_text = py::str(k).cast<std::string>(), key_view = key_text;
    if (path_rules_) {
        path_view_.clear();
        for (const auto& p : path_) path_view_.push_back(p);
    }
    const auto action = r.match_field(path_view_, key_view, keys_);
    if (action == field_action::drop) return false;
    if (!first) put(',');
    key(k);
    if (action == field_action::mask) {
        text(redaction_mask);
    } else if (action == field_action::hash) {
        // A str is hashed as its text, anything else as its JSON: equal values, equal
        // pseudonyms, wherever they occur.
        std::string plain;
        if (PyUnicode_Check(v)) plain = std::string(utf8_of(v));
        else plain = encode_python(v, {opts_.max_depth, opts_.bytes_base64, nullptr});
        text(r.pseudonym(plain));
    } else {
        if (path_rules_) path_.emplace_back(key_view);
        value(v, depth + 1);
        if (path_rules_) path_.pop_back();
    }
    return true;
}

// UTF-8 of a str. A str with lone surrogates (from surrogateescape-decoded bytes) cannot be
// encoded strictly; those code points become U+FFFD.
void encoder::str(PyObject* s) {
    if (PyUnicode_IS_COMPACT_ASCII(s)) {  // ASCII is its own UTF-8: no conversion, no lookup
        return text({static_cast<const char*>(PyUnicode_DATA(s)),
                     static_cast<std::size_t>(PyUnicode_GET_LENGTH(s))});
    }
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(s, &n);  // cached in the str object
    if (p) return text({p, static_cast<std::size_t>(n)});
    PyErr_Clear();
    PyObject* b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (!b) {
        PyErr_Clear();
        return text("<unencodable>");
    }
    text({PyBytes_AS_STRING(b), static_cast<std::size_t>(PyBytes_GET_SIZE(b))});
    Py_DECREF(b);
}

// str(obj), never raising: an object whose __str__ fails is named by its type.
void encoder::via_str(PyObject* obj) {
    PyObject* s = PyObject_Str(obj);
    if (!s) {
        PyErr_Clear();
        return text(std::string("<unprintable ") + Py_TYPE(obj)->tp_name + ">");
    }
    str(s);
    Py_DECREF(s);
}

void encoder::key(PyObject* k) {
    // Same key spelling as json.dumps: str as is, True/False/None as JSON literals, others str().
    if (PyUnicode_Check(k)) str(k);
    else if (k == Py_True) text("true");
    else if (k == Py_False) text("false");
    else if (k == Py_None) text("null");
    else if (PyBytes_Check(k)) text({PyBytes_AS_STRING(k), static_cast<std::size_t>(PyBytes_GET_SIZE(k))});
    else via_str(k);
    put(':');
}

void encoder::integer(PyObject* obj) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (!overflow && !(v == -1 && PyErr_Occurred())) {
        char* p = out_.room(24);
        out_.advance(static_cast<std::size_t>(std::to_chars(p, p + 24, v).ptr - p));
        return;
    }
    PyErr_Clear();
    PyObject* s = PyObject_Str(obj);  // exact digits of a big int
    const char* p = nullptr;
    Py_ssize_t n = 0;
    if (s) p = PyUnicode_AsUTF8AndSize(s, &n);
    if (p) {
        put({p, static_cast<std::size_t>(n)});
    } else {
        PyErr_Clear();
        put("null");
    }
    Py_XDECREF(s);
}

void encoder::number(double v) {
    if (std::isnan(v)) return put("\"NaN\"");
    if (std::isinf(v)) return put(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    // Shortest representation that round-trips; keep a ".0" so it reads back as a float.
    char buf[64];
    const auto res = fmt::format_to_n(buf, sizeof buf, "{}", v);
    const std::string_view digits(buf, std::min(res.size, sizeof buf));
    put(digits);
    if (digits.find_first_of(".eE") == std::string_view::npos) put(".0");
}

void encoder::bytes(std::string_view v) {
    if (!opts_.bytes_base64) {
        if (opts_.redact && opts_.redact->redact_value(v, scratch_)) return text(scratch_);
        return text(v);
    }
    json_writer w;  // base64 is rare: the general writer does it
    w.base64_string(v);
    put(w.str());
}

void encoder::depth_marker(PyObject* obj) {
    put('{');
    text(truncation_marker_key);
    put(":\"depth\",\"type\":");
    text(Py_TYPE(obj)->tp_name);
    put('}');
}


// `k` (a str of the name's length) equals `name`.
template <std::size_t N>
bool key_is(PyObject* k, const char (&name)[N]) {
    if (PyUnicode_IS_COMPACT_ASCII(k)) return std::memcmp(PyUnicode_DATA(k), name, N - 1) == 0;
    return PyUnicode_CompareWithASCIIString(k, name) == 0;  // a str subclass, say
}

}  // namespace

bool str_equals(PyObject* s, std::string_view ascii) {
    if (!PyUnicode_Check(s) || PyUnicode_GET_LENGTH(s) != static_cast<Py_ssize_t>(ascii.size()))
        return false;
    if (PyUnicode_IS_COMPACT_ASCII(s)) return std::memcmp(PyUnicode_DATA(s), ascii.data(), ascii.size()) == 0;
    return PyUnicode_CompareWithASCIIString(s, std::string(ascii).c_str()) == 0;
}

namespace {

// The field of `fields` that a top-level key of an event's data names, or null.
py::object* header_field(event_fields& fields, PyObject* k) {
    if (!PyUnicode_Check(k)) return nullptr;
    switch (PyUnicode_GET_LENGTH(k)) {  // compared only when the length fits
        case 3:
            if (key_is(k, "jid")) return &fields.jid;
            if (key_is(k, "fun")) return &fields.fun;
            return nullptr;
        case 7:
            return key_is(k, "success") ? &fields.success : nullptr;
        default:
            return nullptr;
    }
}

void encoder::dict(PyObject* obj, std::size_t depth, event_fields* fields) {
    put('{');
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    bool first = true;
    // A dict subclass may override items(); plain iteration over the storage is what
    // json.dumps does too. Key and value are held while they are written: a leaf's __str__
    // runs Python code that could remove them from the dict.
    const bool fields_rules = field_rules_;
    while (PyDict_Next(obj, &pos, &k, &v)) {
        Py_INCREF(k);
        Py_INCREF(v);
        if (fields_rules) {
            if (member(k, v, depth, first)) first = false;
        } else {
            if (!first) put(',');
            first = false;
            key(k);
            value(v, depth + 1);
        }
        if (fields)
            if (auto* field = header_field(*fields, k)) *field = py::reinterpret_borrow<py::object>(v);
        Py_DECREF(v);
        Py_DECREF(k);
    }
    put('}');
}

void encoder::sequence(PyObject* obj, std::size_t depth) {
    const bool track = path_rules_;
    if (track) path_.emplace_back("*");
    sequence_items(obj, depth);
    if (track) path_.pop_back();
}

void encoder::sequence_items(PyObject* obj, std::size_t depth) {
    put('[');
    if (PyList_Check(obj)) {
        // A leaf's __str__ runs Python code that could mutate the list: the size is re-read
        // each step and the item held by a reference while it is written.
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(obj); ++i) {
            if (i) put(',');
            PyObject* item = PyList_GET_ITEM(obj, i);
            Py_INCREF(item);
            value(item, depth + 1);
            Py_DECREF(item);
        }
    } else if (PyTuple_Check(obj)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(obj); ++i) {
            if (i) put(',');
            value(PyTuple_GET_ITEM(obj, i), depth + 1);
        }
    } else if (PyObject* it = PyObject_GetIter(obj)) {
        bool first = true;
        while (PyObject* item = PyIter_Next(it)) {
            if (!first) put(',');
            first = false;
            value(item, depth + 1);
            Py_DECREF(item);
        }
        Py_DECREF(it);
    }
    PyErr_Clear();
    put(']');
}

void encoder::value(PyObject* obj, std::size_t depth) {
    // The exact built-in types first (one pointer compare each), then the general checks
    // that also accept subclasses.
    PyTypeObject* type = Py_TYPE(obj);
    if (type == &PyUnicode_Type) return str_value(obj);
    if (obj == Py_None) return put("null");
    if (obj == Py_True) return put("true");
    if (obj == Py_False) return put("false");
    if (type == &PyLong_Type) return integer(obj);
    if (type == &PyDict_Type) {
        if (depth >= opts_.max_depth) return depth_marker(obj);
        return dict(obj, depth, nullptr);
    }
    if (type == &PyList_Type) {
        if (depth >= opts_.max_depth) return depth_marker(obj);
        return sequence(obj, depth);
    }
    if (type == &PyFloat_Type) return number(PyFloat_AS_DOUBLE(obj));

    if (PyUnicode_Check(obj)) return str_value(obj);
    if (PyLong_Check(obj)) return integer(obj);
    if (PyFloat_Check(obj)) return number(PyFloat_AS_DOUBLE(obj));
    if (PyBytes_Check(obj))
        return bytes({PyBytes_AS_STRING(obj), static_cast<std::size_t>(PyBytes_GET_SIZE(obj))});
    if (PyByteArray_Check(obj))
        return bytes({PyByteArray_AS_STRING(obj), static_cast<std::size_t>(PyByteArray_GET_SIZE(obj))});
    const bool is_dict = PyDict_Check(obj);
    if (!is_dict && !PyList_Check(obj) && !PyTuple_Check(obj) && !PyAnySet_Check(obj))
        return via_str(obj);
    if (depth >= opts_.max_depth) return depth_marker(obj);
    if (is_dict) return dict(obj, depth, nullptr);
    sequence(obj, depth);
}

}  // namespace

void warm_up(std::span<PyObject* const> roots) {
    // Breadth first, a level at a time: the objects of a level are requested together and
    // read (to find the next level) only after all of them were requested, so that their
    // cache misses overlap instead of queueing behind each other.
    constexpr std::size_t max_levels = 8;       // event, data, return, state, changes, ...
    constexpr std::size_t max_objects = 16384;  // a large structure would not stay cached anyway
    std::vector<PyObject*> level(roots.begin(), roots.end()), next;
    std::size_t seen = level.size();
    for (PyObject* o : level) __builtin_prefetch(o);
    for (std::size_t depth = 0; depth < max_levels && !level.empty(); ++depth) {
        // The containers' tables; their headers were requested one level up.
        for (PyObject* o : level) {
            if (Py_IS_TYPE(o, &PyDict_Type)) {
                const auto* table = reinterpret_cast<const char*>(reinterpret_cast<PyDictObject*>(o)->ma_keys);
                for (int line = 0; line < 4; ++line) __builtin_prefetch(table + 64 * line);
            } else if (Py_IS_TYPE(o, &PyList_Type)) {
                __builtin_prefetch(reinterpret_cast<PyListObject*>(o)->ob_item);
            }
        }
        // Their members' headers (written later: the encoder holds a reference while it
        // writes a member).
        next.clear();
        for (PyObject* o : level) {
            if (seen + next.size() > max_objects) return;
            if (Py_IS_TYPE(o, &PyDict_Type)) {
                PyObject *k, *v;
                Py_ssize_t pos = 0;
                while (PyDict_Next(o, &pos, &k, &v)) {
                    __builtin_prefetch(v, 1);
                    next.push_back(v);
                }
            } else if (Py_IS_TYPE(o, &PyList_Type)) {
                for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); ++i) {
                    __builtin_prefetch(PyList_GET_ITEM(o, i), 1);
                    next.push_back(PyList_GET_ITEM(o, i));
                }
            }
        }
        seen += next.size();
        level.clear();
        for (PyObject* o : next) {
            if (Py_IS_TYPE(o, &PyDict_Type) || Py_IS_TYPE(o, &PyList_Type))
                level.push_back(o);
            else if (Py_IS_TYPE(o, &PyUnicode_Type))
                __builtin_prefetch(reinterpret_cast<const char*>(o) + 64);  // text past the header
        }
    }
}

void append_python(std::string& out, py::handle obj, const encode_options& opts) {
    encoder e(out, opts);
    e.value(obj.ptr(), 0);
    e.finish();
}

std::string encode_python(py::handle obj, const encode_options& opts) {
    std::string out;
    out.reserve(1024);  // a typical return or event: saves the string's regrowth steps
    append_python(out, obj, opts);
    return out;
}

void append_event_data(std::string& out, py::handle data, const encode_options& opts,
                       event_fields& fields) {
    encoder e(out, opts);
    PyObject* d = data.ptr();
    if (PyDict_Check(d) && opts.max_depth > 0) {
        e.dict(d, 0, &fields);
        e.finish();
        return;
    }
    e.value(d, 0);
    e.finish();
    if (!PyDict_Check(d)) return;
    // Only the depth marker was written: look the fields up instead.
    auto get = [&](const char* name) {
        PyObject* v = PyDict_GetItemString(d, name);  // borrowed; never raises
        return v ? py::reinterpret_borrow<py::object>(v) : py::object();
    };
    fields.jid = get("jid");
    fields.fun = get("fun");
    fields.success = get("success");
}

void assign_text(std::string& out, py::handle h) {
    if (!h || h.is_none()) {
        out.clear();
        return;
    }
    if (PyUnicode_Check(h.ptr())) {
        Py_ssize_t n = 0;
        const char* p = PyUnicode_AsUTF8AndSize(h.ptr(), &n);
        if (p) {
            out.assign(p, static_cast<std::size_t>(n));
            return;
        }
        PyErr_Clear();
    }
    auto s = py::str(h);
    py::bytes b = py::reinterpret_steal<py::bytes>(
        PyUnicode_AsEncodedString(s.ptr(), "utf-8", "surrogatepass"));
    char* p = nullptr;
    Py_ssize_t n = 0;
    if (PyBytes_AsStringAndSize(b.ptr(), &p, &n) != 0) throw py::error_already_set();
    out.assign(p, static_cast<std::size_t>(n));
}

void register_encode(py::module_& m) {
    m.def(
        "encode_json",
        [](py::handle obj, std::size_t max_depth, bool bytes_base64, const redactor* redact) {
            return encode_python(obj, {max_depth, bytes_base64, redact});
        },
        py::arg("obj"), py::arg("max_depth") = 100, py::arg("bytes_base64") = false,
        py::arg("redactor") = py::none(),
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
