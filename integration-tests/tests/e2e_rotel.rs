// Placeholder: this test target is filled in by its owning work item.
