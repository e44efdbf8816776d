//! fracture-layers (work in progress).
