#!/bin/sh
# A fake `claude -p` for bench/workers.py that costs next to no CPU (the Python fake's start-up is
# about 30 ms of CPU): reads the prompt, takes 1 s, prints the stream-json lines the pool reads.
cat >/dev/null
echo '{"type":"system","subtype":"init","session_id":"light"}'
sleep 1
echo '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"light","total_cost_usd":0.001,"usage":{"input_tokens":1,"output_tokens":1}}'
