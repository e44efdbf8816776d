//! fracture-data (work in progress).
