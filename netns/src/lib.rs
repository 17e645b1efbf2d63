//! kiln-netns: declared topology to network namespaces linked by veth pairs, and nothing else.
