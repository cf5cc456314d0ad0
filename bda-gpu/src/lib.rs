//! CUDA backend (placeholder until the GPU issue lands).
