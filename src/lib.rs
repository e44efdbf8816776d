//! fracture-nn facade (work in progress).
