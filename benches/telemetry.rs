// Placeholder: criterion benchmarks filled in by the owning work item.
fn main() {}
