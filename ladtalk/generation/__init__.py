"""Generation: options, lip-sync, restoration and fusion, paste-back, the identity check and
the pipeline's steps (inputs, track, chunk processor, streaming runner). docs/generation.md."""
