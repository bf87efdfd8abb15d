//! CSI driver (being written).
