//! fracture-metrics (work in progress).
