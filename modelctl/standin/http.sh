#!/bin/sh
# One HTTP connection of the stand-in (busybox `nc -ll -e` runs it with the socket as stdin and
# stdout). busybox httpd takes POST only through CGI under /cgi-bin/ and has no rewrite or proxy
# in Debian's build, so the stand-in speaks HTTP itself: GET /health, /version, /v1/models (the
# files standin.sh wrote), POST /v1/chat/completions and /v1/completions (streaming or not), and
# with VLLM_SERVER_DEV_MODE=1 vLLM's sleep-mode endpoints (sleep.sh).
# One request per connection (Connection: close). Settings come from standin.sh's environment:
#   STANDIN_WWW, STANDIN_SERVED (served names, one a line), STANDIN_TOKENS (tokens per answer,
#   default 8; a request's max_tokens caps it), STANDIN_TOKEN_DELAY (seconds between tokens).
WWW=${STANDIN_WWW:-/www}
CR=$(printf '\r')

reply() { # status, content type, body
	printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
		"$1" "$2" "${#3}" "$3"
}
file() { # status, content type, path
	printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
		"$1" "$2" "$(wc -c <"$3")"
	cat "$3"
}
error() { # status, type, message, param
	reply "$1" application/json "{\"error\":{\"message\":\"$3\",\"type\":\"$2\",\"param\":$4,\"code\":${1%% *}}}"
}

read -r method target version || exit 0
len=0
while read -r line; do
	line=${line%"$CR"}
	[ -z "$line" ] && break
	case $line in
	[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]:*)
		len=${line#*:}
		len=${len# }
		;;
	esac
done
path=${target%%\?*}

case "$method $path" in
"GET /health") reply "200 OK" application/json "" ; exit 0 ;;
"GET /version") file "200 OK" application/json "$WWW/version"; exit 0 ;;
"GET /v1/models") file "200 OK" application/json "$WWW/v1/models"; exit 0 ;;
"POST /v1/chat/completions") kind=chat ;;
"POST /v1/completions") kind=text ;;
"POST /sleep" | "POST /wake_up" | "GET /is_sleeping" | "POST /collective_rpc" | "POST /reset_prefix_cache")
	. "${0%/*}/sleep.sh" # vLLM's development endpoints (sleep mode)
	query=
	case $target in *\?*) query=${target#*\?} ;; esac
	sleep_route "$method" "$path" "$query" "$len"
	exit 0
	;;
GET\ * | HEAD\ *) error "404 Not Found" NotFoundError "Not Found" null; exit 0 ;;
*) error "405 Method Not Allowed" MethodNotAllowed "Method Not Allowed" null; exit 0 ;;
esac

case $len in '' | *[!0-9]*) len=0 ;; esac
body=/tmp/req.$$
trap 'rm -f "$body"' EXIT
head -c "$len" >"$body"

field() { grep -o "\"$1\" *: *$2" "$body" | head -n 1 | sed "s/^\"$1\" *: *//"; }
model=$(field model '"[^"]*"' | tr -d '"')
if [ -z "$model" ]; then
	error "400 Bad Request" BadRequestError "the request has no model" '"model"'
	exit 0
fi
known=
for name in $STANDIN_SERVED; do [ "$name" = "$model" ] && known=1; done
if [ -z "$known" ]; then
	error "404 Not Found" NotFoundError "The model \`$model\` does not exist." '"model"'
	exit 0
fi
. "${0%/*}/sleep.sh"
sleep_hold_while_asleep # a sleeping engine queues the request until it is woken
stale=
sleep_weights_stale && stale=1 # level 2 woken without reload_weights: garbage
tokens=${STANDIN_TOKENS:-8}
max=$(field max_tokens '[0-9]*')
[ -n "$max" ] && [ "$max" -lt "$tokens" ] && tokens=$max
max=$(field max_completion_tokens '[0-9]*')
[ -n "$max" ] && [ "$max" -lt "$tokens" ] && tokens=$max
delay=${STANDIN_TOKEN_DELAY:-0}
prompt=$(( len / 4 + 1 ))
created=$(date +%s)
id=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')

# The answer: "Hello from <model>" then "ok" until `tokens` words.
word() { # the i-th word (1-based), with its leading space
	[ -n "$stale" ] && { printf ' garbage'; return; }
	case $1 in
	1) printf 'Hello' ;;
	2) printf ' from' ;;
	3) printf ' %s' "$model" ;;
	*) printf ' ok' ;;
	esac
}

if grep -q '"stream" *: *true' "$body"; then
	printf 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n'
	if [ $kind = chat ]; then
		head="{\"id\":\"chatcmpl-$id\",\"object\":\"chat.completion.chunk\",\"created\":$created,\"model\":\"$model\",\"choices\":[{\"index\":0,"
		printf 'data: %s"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n' "$head"
	else
		head="{\"id\":\"cmpl-$id\",\"object\":\"text_completion\",\"created\":$created,\"model\":\"$model\",\"choices\":[{\"index\":0,"
	fi
	i=1
	while [ $i -le "$tokens" ]; do
		[ $i -gt 1 ] && [ "$delay" != 0 ] && sleep "$delay"
		w=$(word $i)
		if [ $kind = chat ]; then
			printf 'data: %s"delta":{"content":"%s"},"logprobs":null,"finish_reason":null}]}\n\n' "$head" "$w"
		else
			printf 'data: %s"text":"%s","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n' "$head" "$w"
		fi
		i=$(( i + 1 ))
	done
	if [ $kind = chat ]; then
		printf 'data: %s"delta":{},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}\n\n' "$head"
	else
		printf 'data: %s"text":"","logprobs":null,"finish_reason":"stop","stop_reason":null}]}\n\n' "$head"
	fi
	printf 'data: [DONE]\n\n'
	exit 0
fi

text=
i=1
while [ $i -le "$tokens" ]; do
	[ $i -gt 1 ] && [ "$delay" != 0 ] && sleep "$delay"
	text="$text$(word $i)"
	i=$(( i + 1 ))
done
usage="\"usage\":{\"prompt_tokens\":$prompt,\"total_tokens\":$(( prompt + tokens )),\"completion_tokens\":$tokens}"
if [ $kind = chat ]; then
	reply "200 OK" application/json "{\"id\":\"chatcmpl-$id\",\"object\":\"chat.completion\",\"created\":$created,\"model\":\"$model\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"$text\",\"tool_calls\":[]},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}],$usage}"
else
	reply "200 OK" application/json "{\"id\":\"cmpl-$id\",\"object\":\"text_completion\",\"created\":$created,\"model\":\"$model\",\"choices\":[{\"index\":0,\"text\":\"$text\",\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}],$usage}"
fi
