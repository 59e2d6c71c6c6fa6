// fastret._native.JobStore: job-cache reads (and, for tests and `fastret schema --apply`,
// direct writes) of any database backend. Every call releases the GIL while the database
// works: the store serializes its own calls and touches no Python object.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "fastret/job_store.hpp"
#include "fastret/sink.hpp"

namespace py = pybind11;

namespace fastret::py_bind {

config_map to_config_map(const py::dict& d);  // module.cpp

namespace {

// Opens the store of a sink type from the same options its sink takes (validated the same
// way, so an unknown key is a ConfigError naming it).
std::unique_ptr<job_store> open_store(const std::string& type, const py::dict& config) {
    const auto* info = find_sink_type(type);
    if (!info) make_sink("job store", type, {});  // throws the unknown-type error
    auto opts = validate_sink_options("job store", *info, to_config_map(config));
    py::gil_scoped_release release;  // connects to the database: no Python object touched
    return open_job_store(type, opts);
}

}  // namespace

void register_store(py::module_& m) {
    using S = job_store;
    auto released = py::call_guard<py::gil_scoped_release>();
    auto store_error_type =
        py::register_exception<store_error>(m, "StoreError", PyExc_RuntimeError);
    (void)store_error_type;

    py::class_<S>(m, "JobStore",
                  "Job-cache reads of a database backend (sqlite, postgres, mysql). Thread-safe; "
                  "every call blocks for at most the backend's timeouts and raises StoreError "
                  "(never showing a secret) when the database fails.")
        .def("get_load", &S::get_load, py::arg("jid"), released)
        .def("get_minions_of", &S::get_minions_of, py::arg("jid"), released)
        .def("get_returns", &S::get_returns, py::arg("jid"), released)
        .def("get_jobs", &S::get_jobs, py::arg("limit") = 0, py::arg("skip_find_job") = false,
             released)
        .def("get_minion_ids", &S::get_minion_ids, released)
        .def("get_fun", &S::get_fun, py::arg("fun"), released)
        .def("get_endtime", &S::get_endtime, py::arg("jid"), released)
        .def("clean_old_jobs", &S::clean_old_jobs, py::arg("cutoff_us"), released)
        .def("get_events", &S::get_events, py::arg("tag_glob") = "*", py::arg("limit") = 100,
             released)
        .def("count", &S::count, py::arg("table"), released);

    m.def("open_store", &open_store, py::arg("type"), py::arg("config"),
          "Open the job store of a sink type with that sink's options; raises ConfigError for "
          "bad options and StoreError when the database cannot be reached or used.");
    m.def(
        "SqliteStore",
        [](const std::string& path) {
            py::dict config;
            config["path"] = path;
            return open_store("sqlite", config);
        },
        py::arg("path"), "The embedded SQLite job store at `path` (created if missing).");
    m.def("store_schema", &job_store_schema, py::arg("type"), py::arg("writer_role") = "salt_writer",
          py::arg("reader_role") = "salt_reader",
          "The schema DDL of a database backend, with its writer and reader roles.");
    m.def(
        "apply_store_schema",
        [](const std::string& type, const py::dict& config, const std::string& writer,
           const std::string& reader) {
            const auto* info = find_sink_type(type);
            if (!info) make_sink("job store", type, {});  // throws the unknown-type error
            auto opts = validate_sink_options("job store", *info, to_config_map(config));
            py::gil_scoped_release release;  // talks to the database: no Python object touched
            apply_job_store_schema(type, opts, writer, reader);
        },
        py::arg("type"), py::arg("config"), py::arg("writer_role") = "salt_writer",
        py::arg("reader_role") = "salt_reader",
        "Apply the schema (tables, indexes, roles) with a store's options; raises ConfigError "
        "or StoreError.");
}

}  // namespace fastret::py_bind
