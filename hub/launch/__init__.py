"""How hub processes are laid out: `hub serve` over stdio is a thin bridge (`bridge`) that hands
its client's stdin and stdout (`handoff`) to the one shared hub process of its launch
(`shared_process`), which serves each client as a session (`session`); the fast start
(`fast_start`) answers a client's first list requests from the last run while a process starts."""
