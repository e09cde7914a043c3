# vLLM's sleep mode in the stand-in (sourced by http.sh for one request). Not vLLM.
#
# The development endpoints exist only with VLLM_SERVER_DEV_MODE=1 (0.33.0:
# launchers/api_server/routers.py:46-49 -> serve/dev/sleep/api_router.py; 0.11.1:
# entrypoints/openai/api_server.py:1044-1144); without it FastAPI answers 404 {"detail":"Not Found"}.
#   POST /sleep?level=N[&mode=M]  0.33: level 0..2 (default 1, else 422), mode abort|wait|keep
#                                 (else 422) -> {"status":"sleeping","level":N}; 0.11: int(level)
#                                 (a non-number is a 500) -> empty 200. Level 0 (0.33) only pauses.
#                                 Logs "Sleep mode freed X GiB memory, Y GiB memory is still in use."
#                                 (0.11 gpu_worker.py:142 "%.2f"; 0.33 gpu_worker.py:335 format_gib).
#   POST /wake_up[?tags=weights&tags=kv_cache]  wakes those (all without tags) after
#                                 STANDIN_WAKE_SECONDS; 0.33 -> {"status":"awake"|"sleeping","tags":..},
#                                 0.11 -> empty 200. Logs "wake up the engine with tags: ...".
#   GET /is_sleeping              {"is_sleeping": bool} (0.11 logs "check whether the engine is sleeping").
#   POST /collective_rpc          {"method": ...}: reload_weights reloads what a level-2 sleep dropped
#                                 -> {"results":[null]}; no method -> 400.
#   POST /reset_prefix_cache      0.33 {"success":true}; 0.11 empty 200. Logs "Resetting prefix cache...".
# While asleep /health and /v1/models answer as before; a completion waits until the engine is
# awake (0.33's paused scheduler queues it). After a level-2 wake without reload_weights the model
# answers garbage (its weights are whatever the memory held).
# Without --enable-sleep-mode a sleep frees nothing (no memory is in vLLM's sleep-mode pool).
#
# State (files under $STANDIN_WWW/sleep): weights, kv_cache (present: asleep), level, paused,
# stale (level-2 weights woken but not reloaded).
# Environment: STANDIN_WAKE_SECONDS (default 0.2), STANDIN_SLEEP_SECONDS (default 0.1),
#   STANDIN_WAKE_FAIL=error (the wake answers 500, the engine stays asleep) | exit (CUDA out of
#   memory on wake: the server dies, exit 1).

SLEEP_DIR=${STANDIN_WWW:-/www}/sleep
S_VERSION=${STANDIN_RUN_VERSION:-0.33.0}
S_API_PID=${STANDIN_API_PID:-1}
S_EC_PID=${STANDIN_EC_PID:-201}
S_EC_NAME=${STANDIN_EC_NAME:-EngineCore}
S_GPU_UTIL=${STANDIN_GPU_UTIL:-0.92}
S_SLEEP_MODE=${STANDIN_SLEEP_MODE:-0}
S_LOG=/proc/1/fd/1 # the container's log: PID 1's stdout

s_ts() { date '+%m-%d %H:%M:%S'; }
s_log() { echo "(APIServer pid=$S_API_PID) $1 $(s_ts) [$2] $3" >>"$S_LOG" 2>/dev/null; } # level, file:line, text
s_ec_log() { echo "($S_EC_NAME pid=$S_EC_PID) $1 $(s_ts) [$2] $3" >>"$S_LOG" 2>/dev/null; }
s_reply() { # status, body (JSON or empty)
	if [ -z "$2" ]; then
		printf 'HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$1"
	else
		printf 'HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
			"$1" "${#2}" "$2"
	fi
}
s_asleep() { [ -f "$SLEEP_DIR/weights" ] || [ -f "$SLEEP_DIR/kv_cache" ] || [ -f "$SLEEP_DIR/paused" ]; }
s_pause() { case ${1:-0} in 0 | 0.0 | '') ;; *) sleep "$1" ;; esac; }
s_param() { # name, query: every value of name, one a line
	echo "$2" | tr '&' '\n' | sed -n "s/^$1=//p"
}
s_dev_mode() {
	case ${VLLM_SERVER_DEV_MODE:-0} in 1 | true | True) return 0 ;; esac
	return 1
}

# A completion waits while the engine sleeps (the scheduler is paused).
sleep_hold_while_asleep() {
	while s_asleep; do sleep 0.05; done
}

sleep_weights_stale() { [ -f "$SLEEP_DIR/stale" ]; }

sleep_route() { # method, path, query, body length
	method=$1 path=$2 query=$3 len=$4
	if ! s_dev_mode; then
		s_reply "404 Not Found" '{"detail":"Not Found"}'
		return 0
	fi
	mkdir -p "$SLEEP_DIR"
	case "$method $path" in
	"POST /sleep") sleep_do "$query" ;;
	"POST /wake_up") wake_do "$query" ;;
	"GET /is_sleeping")
		[ "$S_VERSION" = 0.11.1 ] && s_log INFO api_server.py:1109 "check whether the engine is sleeping"
		if s_asleep; then s_reply "200 OK" '{"is_sleeping":true}'; else s_reply "200 OK" '{"is_sleeping":false}'; fi
		;;
	"POST /collective_rpc") rpc_do "$len" ;;
	"POST /reset_prefix_cache")
		if [ "$S_VERSION" = 0.11.1 ]; then
			s_log INFO api_server.py:1072 "Resetting prefix cache..."
			s_reply "200 OK" ""
		else
			s_log INFO api_router.py:39 "Resetting prefix cache..."
			s_reply "200 OK" '{"success":true}'
		fi
		;;
	*) s_reply "405 Method Not Allowed" '{"detail":"Method Not Allowed"}' ;;
	esac
}

s_unprocessable() { # FastAPI's validation error (0.33)
	s_reply "422 Unprocessable Entity" "{\"detail\":[{\"type\":\"$1\",\"loc\":[\"query\",\"$2\"],\"msg\":\"$3\",\"input\":\"$4\"}]}"
}

sleep_do() {
	level=$(s_param level "$1" | head -n 1)
	mode=$(s_param mode "$1" | head -n 1)
	[ -n "$level" ] || level=1
	if [ "$S_VERSION" = 0.11.1 ]; then
		case $level in
		'' | *[!0-9]*)
			s_reply "500 Internal Server Error" "" # int(level) raised ValueError
			return 0
			;;
		esac
	else
		case $level in
		0 | 1 | 2) ;;
		*[!0-9-]* | '') s_unprocessable int_parsing level "Input should be a valid integer, unable to parse string as an integer" "$level"; return 0 ;;
		*) s_unprocessable less_than_equal level "Input should be less than or equal to 2" "$level"; return 0 ;;
		esac
		case ${mode:-abort} in
		abort | wait | keep) ;;
		*) s_unprocessable literal_error mode "Input should be 'abort', 'wait' or 'keep'" "$mode"; return 0 ;;
		esac
	fi
	s_pause "${STANDIN_SLEEP_SECONDS:-0.1}"
	if [ "$level" = 0 ]; then
		: >"$SLEEP_DIR/paused"
	else
		: >"$SLEEP_DIR/weights"
		: >"$SLEEP_DIR/kv_cache"
		# Only level 1 offloads the weights; 0.11.1 takes any other number as "discard all"
		# (gpu_worker.py: offload_tags=("weights",) if level == 1 else tuple()).
		[ "$level" = 1 ] && echo 1 >"$SLEEP_DIR/level" || echo 2 >"$SLEEP_DIR/level"
		# What the engine held awake (its share of an 11.94 GiB card) less what stays: the CUDA
		# context and cuBLAS workspaces. Without --enable-sleep-mode nothing is in the pool.
		residual=0.55
		if [ "$S_SLEEP_MODE" = 1 ]; then
			freed=$(awk -v u="$S_GPU_UTIL" -v r="$residual" 'BEGIN { f = u * 11.94 - r; if (f < 0) f = 0; print f }')
		else
			freed=0
			residual=$(awk -v u="$S_GPU_UTIL" 'BEGIN { print u * 11.94 }')
		fi
		if [ "$S_VERSION" = 0.11.1 ]; then
			s_ec_log INFO gpu_worker.py:142 "Sleep mode freed $(awk -v x="$freed" 'BEGIN { printf "%.2f", x }') GiB memory, $(awk -v x="$residual" 'BEGIN { printf "%.2f", x }') GiB memory is still in use."
		else
			s_ec_log INFO gpu_worker.py:335 "Sleep mode freed $(awk -v x="$freed" 'BEGIN { v = sprintf("%.2f", x) + 0; print v }') GiB memory, $(awk -v x="$residual" 'BEGIN { v = sprintf("%.2f", x) + 0; print v }') GiB memory is still in use."
		fi
	fi
	if [ "$S_VERSION" = 0.11.1 ]; then
		s_reply "200 OK" ""
	else
		s_reply "200 OK" "{\"status\":\"sleeping\",\"level\":$level}"
	fi
}

wake_do() {
	tags=$(s_param tags "$1")
	if [ -z "$tags" ]; then
		shown=None
		json_tags=null
	else
		shown="[$(echo "$tags" | sed "s/.*/'&'/" | sed ':a; N; s/\n/, /; ta')]"
		json_tags="[$(echo "$tags" | sed 's/.*/"&"/' | sed ':a; N; s/\n/,/; ta')]"
	fi
	if [ "$S_VERSION" = 0.11.1 ]; then
		s_log INFO api_server.py:1101 "wake up the engine with tags: $shown"
	else
		s_log INFO api_router.py:50 "wake up the engine with tags: $shown"
	fi
	s_pause "${STANDIN_WAKE_SECONDS:-0.2}"
	case ${STANDIN_WAKE_FAIL:-} in
	error | exit)
		oom="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 4.00 GiB. GPU 0 has a total capacity of 11.94 GiB of which 1.21 GiB is free."
		{
			echo "Traceback (most recent call last):"
			echo "  File \"/usr/local/lib/python3.12/dist-packages/vllm/device_allocator/cumem.py\", line 290, in wake_up"
			echo "$oom"
		} | sed "s/^/($S_EC_NAME pid=$S_EC_PID) ERROR $(s_ts) [core.py:1584] /" >>"$S_LOG" 2>/dev/null
		if [ "$STANDIN_WAKE_FAIL" = exit ]; then
			kill -USR1 1 2>/dev/null # standin.sh: the engine core died, the server exits 1
			sleep 5
		fi
		s_reply "500 Internal Server Error" '{"detail":"Internal Server Error"}'
		return 0
		;;
	esac
	level=$(cat "$SLEEP_DIR/level" 2>/dev/null)
	if [ -z "$tags" ]; then
		[ "$level" = 2 ] && [ -f "$SLEEP_DIR/weights" ] && : >"$SLEEP_DIR/stale"
		rm -f "$SLEEP_DIR/weights" "$SLEEP_DIR/kv_cache" "$SLEEP_DIR/paused"
	else
		for tag in $tags; do
			case $tag in
			weights)
				[ "$level" = 2 ] && [ -f "$SLEEP_DIR/weights" ] && : >"$SLEEP_DIR/stale"
				rm -f "$SLEEP_DIR/weights"
				;;
			kv_cache) rm -f "$SLEEP_DIR/kv_cache" ;;
			scheduling) rm -f "$SLEEP_DIR/paused" ;;
			esac
		done
		[ -f "$SLEEP_DIR/weights" ] || [ -f "$SLEEP_DIR/kv_cache" ] || rm -f "$SLEEP_DIR/paused"
	fi
	if [ "$S_VERSION" = 0.11.1 ]; then
		s_reply "200 OK" ""
	elif s_asleep; then
		s_reply "200 OK" "{\"status\":\"sleeping\",\"tags\":$json_tags}"
	else
		s_reply "200 OK" "{\"status\":\"awake\",\"tags\":$json_tags}"
	fi
}

rpc_do() {
	len=$1
	case $len in '' | *[!0-9]*) len=0 ;; esac
	body=$(head -c "$len")
	case $body in
	\{*) ;;
	*)
		s_reply "400 Bad Request" '{"detail":"JSON decode error: Expecting value: line 1 column 1 (char 0)"}'
		return 0
		;;
	esac
	method=$(echo "$body" | grep -o '"method" *: *"[^"]*"' | head -n 1 | sed 's/.*: *"//; s/"$//')
	if [ -z "$method" ]; then
		s_reply "400 Bad Request" "{\"detail\":\"Missing 'method' in request body\"}"
		return 0
	fi
	case $method in
	reload_weights) rm -f "$SLEEP_DIR/stale" ;;
	esac
	s_reply "200 OK" '{"results":[null]}'
}
