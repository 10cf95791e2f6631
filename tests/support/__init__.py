"""What tests and benchmarks share: the sample and the tiny training (helpers), real servers on
loopback (SeaweedFS, a two-node Ray: servers; the museums with their recorded answers: museums),
made-up images and exports, and drivers of stages on the loopback cluster. Imported as
`tests.support.NAME` by tests and bench alike."""
