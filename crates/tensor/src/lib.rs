//! fracture-tensor (work in progress).
