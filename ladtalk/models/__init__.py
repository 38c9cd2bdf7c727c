"""Network definitions: Wav2Lip generator, SyncNet experts, SOVQAE."""
