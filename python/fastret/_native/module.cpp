// fastret._native: the runtime, records and sink registry for Python.
//
// GIL: Python objects are converted to records while holding the GIL; enqueue, flush and close
// run with it released (they touch only C++ data and may wait on I/O), and the runtime's
// I/O thread never touches a Python object.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <span>

#include "encode.hpp"
#include "fastret/config.hpp"
#include "fastret/record.hpp"
#include "fastret/redact.hpp"
#include "fastret/runtime.hpp"
#include "fastret/sink.hpp"
#include "fastret/spool.hpp"

namespace py = pybind11;

namespace fastret::py_bind {

void register_store(py::module_& m);
void register_redact(py::module_& m);

namespace {

config_value to_config_value(const std::string& key, py::handle v) {
    if (v.is_none()) return std::monostate{};
    if (py::isinstance<py::bool_>(v)) return v.cast<bool>();
    if (py::isinstance<py::int_>(v)) return v.cast<std::int64_t>();
    if (py::isinstance<py::float_>(v)) return v.cast<double>();
    if (py::isinstance<py::str>(v)) return v.cast<std::string>();
    if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
        std::vector<std::string> out;
        for (auto item : v) {
            if (!py::isinstance<py::str>(item))
                throw config_error("option '" + key + "' must be a list of strings");
            out.push_back(item.cast<std::string>());
        }
        return out;
    }
    throw config_error("option '" + key + "' has an unsupported type " +
                       std::string(Py_TYPE(v.ptr())->tp_name));
}

}  // namespace

config_map to_config_map(const py::dict& d) {
    config_map m;
    for (auto [k, v] : d) {
        auto key = py::str(k).cast<std::string>();
        m[key] = to_config_value(key, v);
    }
    return m;
}

}  // namespace fastret::py_bind

namespace {

using namespace fastret;
using py_bind::to_config_map;

py::dict spec_to_dict(const option_spec& o) {
    py::dict d;
    d["key"] = o.key;
    d["type"] = std::string(to_string(o.type));
    d["default"] = o.default_text;
    d["required"] = o.required;
    d["min"] = o.min == INT64_MIN ? py::object(py::none()) : py::object(py::int_(o.min));
    d["max"] = o.max == INT64_MAX ? py::object(py::none()) : py::object(py::int_(o.max));
    d["choices"] = o.choices;
    d["doc"] = o.doc;
    d["secret"] = o.secret;
    return d;
}

record_kind parse_kind(const std::string& kind) {
    auto k = record_kind_from_string(kind);
    if (!k) throw py::value_error("unknown record kind '" + kind + "'");
    return *k;
}

// A record's fields from Python: (kind, jid, minion, fun, tag, success, retcode, data).
// `data` is encoded here; the rest are plain strings (str() for anything else).
void fill_record(record& r, const py::tuple& t, const py_bind::encode_options& eo) {
    if (t.size() != 8) throw py::value_error("record tuple must have 8 items");
    r.kind = parse_kind(t[0].cast<std::string>());
    r.ts_us = now_us();
    r.id.clear();  // given on the I/O thread
    py_bind::assign_text(r.jid, t[1]);
    py_bind::assign_text(r.minion, t[2]);
    py_bind::assign_text(r.fun, t[3]);
    py_bind::assign_text(r.tag, t[4]);
    if (t[5].is_none()) r.success = -1;
    else r.success = py::bool_(t[5]).cast<bool>() ? 1 : 0;
    r.retcode.reset();
    if (!t[6].is_none()) {
        try {
            r.retcode = t[6].cast<std::int64_t>();
        } catch (const py::cast_error&) {
        }
    }
    r.payload.clear();
    py_bind::append_python(r.payload, t[7], eo);
}

// An event from Salt's event bus ({"tag": ..., "data": ...}) as a record, built here rather
// than through a Python tuple: event_return() hands over hundreds at a time.
void fill_event_record(record& r, PyObject* ev, const std::string& master_id,
                       const py_bind::encode_options& eo) {
    r.kind = record_kind::event;
    r.ts_us = now_us();
    r.id.clear();  // given on the I/O thread
    r.minion = master_id;
    r.success = -1;
    r.retcode.reset();
    PyObject* tag = nullptr;
    PyObject* data = nullptr;
    // The two keys are found by walking the dict: cheaper than two hashed lookups.
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(ev, &pos, &k, &v)) {
        if (py_bind::str_equals(k, "tag")) tag = v;
        else if (py_bind::str_equals(k, "data")) data = v;
    }
    // Held: encoding runs __str__ of odd leaves, which could change the event dict.
    const auto tag_ref = py::reinterpret_borrow<py::object>(tag);
    const auto data_ref = py::reinterpret_borrow<py::object>(data);
    py_bind::assign_text(r.tag, tag_ref);
    r.payload.clear();
    py_bind::event_fields fields;
    if (data) py_bind::append_event_data(r.payload, data_ref, eo, fields);
    else r.payload = "null";
    py_bind::assign_text(r.jid, fields.jid);
    py_bind::assign_text(r.fun, fields.fun);
    if (fields.success && !fields.success.is_none())
        r.success = PyObject_IsTrue(fields.success.ptr()) == 1 ? 1 : 0;
    if (PyErr_Occurred()) PyErr_Clear();  // a failing __bool__: success stays unknown
}

// The records of one submit call. A thread's next call reuses them, so that their strings
// keep their storage instead of being allocated again for every record. A nested call on the
// same thread (from Python code run while encoding) gets fresh ones.
class record_scratch {
public:
    record_scratch() : owner_(!in_use_) {
        if (owner_) in_use_ = true;
    }
    ~record_scratch() {
        if (!owner_) return;
        // A batch with huge records leaves no huge buffers behind.
        std::size_t kept = 0;
        for (std::size_t i = 0; i < used_; ++i) kept += shared_[i].payload.capacity();
        if (kept > (std::size_t{8} << 20)) shared_.clear();
        in_use_ = false;
    }
    record_scratch(const record_scratch&) = delete;
    record_scratch& operator=(const record_scratch&) = delete;

    // The next record to fill (its fields hold the values of an earlier call).
    record& next() {
        auto& v = records();
        if (used_ == v.size()) v.emplace_back();
        return v[used_++];
    }
    std::span<const record> filled() { return {records().data(), used_}; }

private:
    std::vector<record>& records() { return owner_ ? shared_ : own_; }

    static thread_local std::vector<record> shared_;
    static thread_local bool in_use_;
    bool owner_;
    std::vector<record> own_;
    std::size_t used_ = 0;
};

thread_local std::vector<record> record_scratch::shared_;
thread_local bool record_scratch::in_use_ = false;

std::vector<std::uint64_t> enqueue_all(const std::vector<std::size_t>& sinks,
                                       std::span<const record> batch) {
    std::vector<std::uint64_t> tickets;
    py::gil_scoped_release release;  // spool append and queueing: C++ data only
    auto& rt = runtime::instance();
    for (auto sink : sinks) tickets.push_back(rt.enqueue(sink, batch));
    return tickets;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "fastret's compiled core (records, runtime, sinks, spool)";

    py::register_exception<config_error>(m, "ConfigError", PyExc_ValueError);

    py_bind::register_encode(m);
    py_bind::register_store(m);
    py_bind::register_redact(m);

    m.def(
        "add_sink",
        [](const std::string& name, const std::string& type, const py::dict& config,
           const std::string& spool_root) -> std::size_t {
            options validated;
            auto s = make_sink(name, type, to_config_map(config), &validated);
            auto policy = policy_from_options(validated, name, spool_root);
            py::gil_scoped_release release;  // starts the I/O thread, opens the spool: no Python
            return runtime::instance().add_sink(name, std::move(s), std::move(policy));
        },
        py::arg("name"), py::arg("type"), py::arg("config"), py::arg("spool_root"),
        "Validate a sink's configuration, build it and register it with this process's runtime. "
        "Raises ConfigError naming the sink and key.");

    m.def(
        "validate_sink",
        [](const std::string& name, const std::string& type, const py::dict& config) {
            const auto* info = find_sink_type(type);
            if (!info) make_sink(name, type, {});  // throws the unknown-type error
            validate_sink_options(name, *info, to_config_map(config));
        },
        py::arg("name"), py::arg("type"), py::arg("config"),
        "Check a sink's configuration without building it; raises ConfigError.");

    m.def(
        "submit",
        [](const std::vector<std::size_t>& sinks, const py::list& records, std::size_t max_depth,
           bool bytes_base64, const redactor* redact) {
            key_cache keys;  // keys repeat across the batch's records
            py_bind::encode_options eo{max_depth, bytes_base64, redact, &keys};
            record_scratch batch;
            for (auto item : records) fill_record(batch.next(), item.cast<py::tuple>(), eo);
            return enqueue_all(sinks, batch.filled());
        },
        py::arg("sinks"), py::arg("records"), py::arg("max_depth") = 100,
        py::arg("bytes_base64") = false, py::arg("redactor") = py::none(),
        "Encode records (tuples of kind, jid, minion, fun, tag, success, retcode, data) and hand "
        "them to each sink. Returns one ticket per sink for flush_until().");

    m.def(
        "submit_events",
        [](const std::vector<std::size_t>& sinks, const py::list& events,
           const std::string& master_id, std::size_t max_depth, bool bytes_base64,
           const redactor* redact) {
            key_cache keys;  // keys repeat across the batch's records
            py_bind::encode_options eo{max_depth, bytes_base64, redact, &keys};
            record_scratch batch;
            py_bind::warm_up({reinterpret_cast<PyListObject*>(events.ptr())->ob_item,
                              static_cast<std::size_t>(PyList_GET_SIZE(events.ptr()))});
            for (auto ev : events)
                if (PyDict_Check(ev.ptr())) fill_event_record(batch.next(), ev.ptr(), master_id, eo);
            return enqueue_all(sinks, batch.filled());
        },
        py::arg("sinks"), py::arg("events"), py::arg("master_id"), py::arg("max_depth") = 100,
        py::arg("bytes_base64") = false, py::arg("redactor") = py::none(),
        "Encode Salt events ({'tag': ..., 'data': ...}; other items are skipped) as records and "
        "hand them to each sink. Returns one ticket per sink.");

    m.def(
        "flush_until",
        [](std::size_t sink, std::uint64_t ticket, double timeout_s) {
            py::gil_scoped_release release;  // waits on the I/O thread
            return runtime::instance().flush_until(
                sink, ticket, std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000)));
        },
        py::arg("sink"), py::arg("ticket"), py::arg("timeout"));

    m.def(
        "failures", [](std::size_t sink) { return runtime::instance().failures(sink); }, py::arg("sink"),
        "Write and sync attempts of the sink that failed so far in this process.");

    m.def(
        "wait_delivered",
        [](std::size_t sink, std::uint64_t ticket, double timeout_s, std::uint64_t failures_before) {
            runtime::wait_result r;
            {
                py::gil_scoped_release release;
                r = runtime::instance().wait_delivered(
                    sink, ticket, std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000)),
                    failures_before);
            }
            switch (r) {
                case runtime::wait_result::delivered: return "delivered";
                case runtime::wait_result::failed: return "failed";
                default: return "timed_out";
            }
        },
        py::arg("sink"), py::arg("ticket"), py::arg("timeout"), py::arg("failures_before"),
        "Wait until the sink has delivered everything up to `ticket` ('delivered'), a write of it "
        "failed after its failure count was `failures_before` ('failed'), or the timeout passed "
        "('timed_out').");

    m.def(
        "flush",
        [](double timeout_s) {
            py::gil_scoped_release release;
            return runtime::instance().flush(
                std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000)));
        },
        py::arg("timeout"));

    m.def(
        "close",
        [](double timeout_s) {
            py::gil_scoped_release release;  // joins the I/O thread
            runtime::instance().close(
                std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000)));
        },
        py::arg("timeout"));

    m.def(
        "drain",
        [](double timeout_s) {
            py::gil_scoped_release release;  // waits on the I/O thread
            return runtime::instance().drain(
                std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000)));
        },
        py::arg("timeout"),
        "Wait until every sink delivered everything, including spooled records of earlier "
        "processes. False on timeout or a fatal sink.");

    m.def("crc32c", [](py::bytes data) { return crc32c(std::string_view(data)); });

    m.def("is_closed", [] { return runtime::instance().is_closed(); });
    m.def("find_sink", [](const std::string& name) { return runtime::instance().find(name); });

    m.def("stats", [] {
        py::list out;
        for (const auto& s : runtime::instance().stats()) {
            py::dict d;
            d["name"] = s.name;
            d["type"] = s.type;
            d["accepted"] = s.accepted;
            d["delivered"] = s.delivered;
            d["retried"] = s.retried;
            d["spooled"] = s.spooled;
            d["replayed"] = s.replayed;
            d["dropped"] = s.dropped;
            d["failed"] = s.failed;
            d["truncated"] = s.truncated;
            d["bytes"] = s.bytes;
            d["queue_depth"] = s.queue_depth;
            d["last_error"] = s.last_error;
            d["fatal"] = s.fatal;
            out.append(d);
        }
        return out;
    });

    m.def(
        "spool_records",
        [](const std::string& dir, const std::string& jid) {
            std::vector<std::tuple<std::string, std::string, std::string, std::int64_t>> out;
            {
                py::gil_scoped_release release;  // file reads only, no Python object
                scan_unacknowledged(dir, [&](std::string_view payload) {
                    record rec;
                    if (deserialize(payload, rec) && rec.jid == jid)
                        out.emplace_back(std::string(to_string(rec.kind)), rec.minion,
                                         std::move(rec.payload), rec.ts_us);
                });
            }
            return out;
        },
        py::arg("spool_dir"), py::arg("jid"),
        "(kind, minion, payload JSON, time in us) of the records of `jid` that wait in a sink's "
        "spool, oldest first. Reads without locking, from any process.");

    m.def(
        "spool_backlog",
        [](const std::string& dir) {
            spool_backlog b;
            {
                py::gil_scoped_release release;
                b = backlog_of(dir);
            }
            py::dict d;
            d["segments"] = b.segments;
            d["bytes_on_disk"] = b.bytes_on_disk;
            d["pending_records"] = b.frames;
            d["pending_bytes"] = b.bytes;
            return d;
        },
        py::arg("spool_dir"),
        "What waits in a sink's spool directory: segments, bytes_on_disk, pending_records and "
        "pending_bytes (frames not acknowledged, checksums verified). Reads without locking, "
        "from any process.");

    m.def("take_messages", [] {
        py::list out;
        for (auto& msg : runtime::instance().take_messages())
            out.append(py::make_tuple(msg.level, msg.text));
        return out;
    });

    m.def("sink_types", [] {
        py::list out;
        for (const auto& t : sink_types()) {
            py::dict d;
            d["type"] = t.type;
            d["summary"] = t.summary;
            py::list opts;
            for (const auto& o : with_secret_sources(*t.option_table)) opts.append(spec_to_dict(o));
            d["options"] = opts;
            out.append(d);
        }
        return out;
    });

    m.def("common_options", [] {
        py::list opts;
        for (const auto& o : common_sink_options()) opts.append(spec_to_dict(o));
        return opts;
    });

    m.def("record_id",
          [](const std::string& kind, const std::string& jid, const std::string& minion,
             const std::string& fun, const std::string& tag, const std::string& payload) {
              record r;
              r.kind = parse_kind(kind);
              r.jid = jid;
              r.minion = minion;
              r.fun = fun;
              r.tag = tag;
              r.payload = payload;
              return compute_record_id(r);
          });
}
