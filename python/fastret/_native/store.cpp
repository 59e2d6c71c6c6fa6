// fastret._native.SqliteStore: job-cache reads of the embedded store. Every call releases the
// GIL while SQLite works (the store has its own mutex and touches no Python object).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "fastret/sqlite_store.hpp"

namespace py = pybind11;

namespace fastret::py_bind {

void register_store(py::module_& m) {
    using S = sqlite_store;
    auto released = py::call_guard<py::gil_scoped_release>();
    py::class_<S>(m, "SqliteStore",
                  "Reads (and, for tests, direct writes) of fastret's SQLite job cache and "
                  "event store. Thread-safe.")
        .def(py::init<const std::filesystem::path&, int, bool>(), py::arg("path"),
             py::arg("busy_timeout_ms") = 5000, py::arg("synchronous_full") = false, released)
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
        .def("count", &S::count, py::arg("table"), released)
        .def_property_readonly("path", [](const S& s) { return s.path(); });
}

}  // namespace fastret::py_bind
