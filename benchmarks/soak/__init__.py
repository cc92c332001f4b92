"""The soak benchmark of issue #16: a bounded run at about 70 % of capacity with valid and
invalid requests, client disconnects and model reloads, sampling the server's processes
(RSS, open fds, threads) to show whether anything grows. `python -m benchmarks.soak`."""
