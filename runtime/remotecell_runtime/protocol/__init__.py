"""The protocol both sides speak: the client (`remotecell`), the daemon and the containers import it.

- `framing`: messages as ZeroMQ frames (protocol tag, JSON header, payload frames); never unpickles.
- `pickling`: payloads as pickle-5 streams with out-of-band buffers (client and containers only).
- `sharedmem`: large buffers through /dev/shm segments between processes on one host.
- `errors`: the names of the errors the runtime makes, one registry for both sides.
- `spec`: what a container loads for a remote class.

Invariant: this package imports nothing from `remotecell` or the rest of `remotecell_runtime`,
so it can be shared without pulling either side in.
"""
