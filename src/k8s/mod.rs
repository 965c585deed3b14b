//! Kubernetes: pod/workload index from kube-rs reflectors, resource attributes, pod interface attachment.
