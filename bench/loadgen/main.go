// Command loadgen is the benchmarks' load generator, compiled so that it is never the limit.
//
// The Python load generator (bench/loadgen.py) reaches 85-97 % of its core at the rates the
// server now reaches; this one does the same work for a fraction of the CPU. It speaks
// Switchover's wire protocol (docs/protocol.md) and plain echo, runs pinned to its own core
// beside the server, and reads the server's CPU time from /proc so that both are reported.
//
// Workloads (each prints "progress {json}" lines on stderr and one "result {json}" on stdout):
//
//	echo      N connections doing back-to-back round trips of a ~100-byte text frame
//	sessions  M agents (hello, presence online) and N users (hello, LIVECHAT_SESSION_START,
//	          wait for agent_joined), then user -> agent -> user ping-pong of 100-byte texts,
//	          each message sent with an id and acknowledged
//	connect   K times connect, (user hello and welcome, if -hello; a returning user's hello
//	          with its resume token, if -resume), close; at -concurrency
//
// Only ever connects to 127.0.0.1. Every loop is bounded by a duration or a count.
//
// Built by bench/e2e.py with Debian's Go and gorilla/websocket, no module download:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o /tmp/x/loadgen ./bench/loadgen
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// pingText makes a message frame of about 100 bytes, a short chat message on the wire.
const pingText = "the quick brown fox jumps over the lazy dog, twice"

const sessionStart = "LIVECHAT_SESSION_START"

type options struct {
	url          string
	serverPid    int
	connections  int
	users        int
	agentTokens  string
	botID        string
	duration     time.Duration
	warmup       time.Duration
	concurrency  int
	setupTimeout time.Duration
	count        int
	hello        bool
	resume       bool
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen echo|sessions|connect [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var o options
	fs.StringVar(&o.url, "url", "", "ws://127.0.0.1:PORT of the server")
	fs.IntVar(&o.serverPid, "server-pid", 0, "pid whose CPU time is read from /proc")
	fs.IntVar(&o.connections, "connections", 100, "echo: connections")
	fs.IntVar(&o.users, "users", 100, "sessions: users (one live session each)")
	fs.StringVar(&o.agentTokens, "agent-tokens", "", "sessions: comma-separated agent tokens")
	fs.StringVar(&o.botID, "bot-id", "demo", "sessions, connect: the users' bot")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "time before measuring")
	fs.IntVar(&o.concurrency, "concurrency", 50, "connections being opened at once")
	fs.DurationVar(&o.setupTimeout, "setup-timeout", 60*time.Second, "per user: wait for pickup")
	fs.IntVar(&o.count, "count", 2000, "connect: connections to open and close")
	fs.BoolVar(&o.hello, "hello", false, "connect: say a user hello and wait for the welcome")
	fs.BoolVar(&o.resume, "resume", false,
		"connect: open -count conversations first (not timed), then time a hello with each one's resume token")
	_ = fs.Parse(os.Args[2:])
	if !strings.HasPrefix(o.url, "ws://127.0.0.1") && !strings.HasPrefix(o.url, "ws://localhost") {
		fail(fmt.Errorf("refusing to send load anywhere but 127.0.0.1: %q", o.url))
	}
	var result map[string]any
	var err error
	switch mode {
	case "echo":
		result, err = runEcho(&o)
	case "sessions":
		result, err = runSessions(&o)
	case "connect":
		result, err = runConnect(&o)
	default:
		err = fmt.Errorf("unknown workload %q", mode)
	}
	if err != nil {
		fail(err)
	}
	out, _ := json.Marshal(result)
	fmt.Printf("result %s\n", out)
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
	os.Exit(1)
}

func progress(fields map[string]any) {
	out, _ := json.Marshal(fields)
	fmt.Fprintf(os.Stderr, "progress %s\n", out)
}

// --- measurement --------------------------------------------------------------------------

type cpuSample struct {
	wall      time.Time
	own       float64
	server    float64
	serverRSS int64
	hasServer bool
	// The server's main thread (trio's, for Switchover) alone: the rest is worker threads
	// (the SQLite writer and readers).
	serverMain float64
}

// clockTicks is USER_HZ, what /proc/<pid>/stat counts in; 100 on every Linux we run on.
const clockTicks = 100.0

func sample(pid int) cpuSample {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	s := cpuSample{
		wall: time.Now(),
		own:  float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9,
	}
	if pid > 0 {
		if cpu, rss, err := readProc(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			s.server, s.serverRSS, s.hasServer = cpu, rss, true
		}
		if cpu, _, err := readProc(fmt.Sprintf("/proc/%d/task/%d/stat", pid, pid)); err == nil {
			s.serverMain = cpu
		}
	}
	return s
}

// readProc reads a process's (or thread's) user+system CPU seconds and resident set from
// its stat file in /proc.
func readProc(path string) (float64, int64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold spaces: split after the last ')'.
	text := string(raw)
	fields := strings.Fields(text[strings.LastIndexByte(text, ')')+2:])
	// After the name: state is field 3 of stat(5), so utime (14) is index 11, stime 12,
	// rss (24, in pages) index 21.
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	rssPages, _ := strconv.ParseInt(fields[21], 10, 64)
	return (utime + stime) / clockTicks, rssPages * int64(os.Getpagesize()), nil
}

// window counts round trips between open and close; before that is warm-up.
type window struct {
	measuring atomic.Bool
	mu        sync.Mutex
	latencies []time.Duration
	errs      chan error
}

func newWindow() *window { return &window{errs: make(chan error, 1)} }

func (w *window) record(latency time.Duration) {
	if w.measuring.Load() {
		w.mu.Lock()
		w.latencies = append(w.latencies, latency)
		w.mu.Unlock()
	}
}

func (w *window) failed(err error) {
	select {
	case w.errs <- err:
	default:
	}
}

func (w *window) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.latencies)
}

func percentile(sorted []time.Duration, fraction float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(fraction*float64(len(sorted)-1) + 0.5)
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i]) / 1e6
}

func measure(w *window, o *options, label string) (map[string]any, error) {
	select {
	case err := <-w.errs:
		return nil, err
	case <-time.After(o.warmup):
	}
	start := sample(o.serverPid)
	w.measuring.Store(true)
	deadline := start.wall.Add(o.duration)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if left > time.Second {
			left = time.Second
		}
		select {
		case err := <-w.errs:
			return nil, fmt.Errorf("%s: %w", label, err)
		case <-time.After(left):
		}
		elapsed := time.Since(start.wall).Seconds()
		n := w.count()
		progress(map[string]any{
			"label": label, "elapsed": round1(elapsed), "of": o.duration.Seconds(),
			"round_trips": n, "rate": int(float64(n) / elapsed),
		})
	}
	w.measuring.Store(false)
	end := sample(o.serverPid)
	elapsed := end.wall.Sub(start.wall).Seconds()
	w.mu.Lock()
	lat := append([]time.Duration(nil), w.latencies...)
	w.mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	maxMs := 0.0
	if len(lat) > 0 {
		maxMs = float64(lat[len(lat)-1]) / 1e6
	}
	result := map[string]any{
		"seconds":           elapsed,
		"round_trips":       len(lat),
		"round_trips_per_s": float64(len(lat)) / elapsed,
		"latency_ms": map[string]float64{
			"p50": percentile(lat, 0.50), "p99": percentile(lat, 0.99), "max": maxMs,
		},
		"client_cpu_fraction": (end.own - start.own) / elapsed,
		"load_generator":      "go",
	}
	if start.hasServer && end.hasServer {
		result["server_cpu_fraction"] = (end.server - start.server) / elapsed
		result["server_cpu_seconds"] = end.server - start.server
		result["server_main_thread_cpu_seconds"] = end.serverMain - start.serverMain
		result["server_rss_bytes"] = end.serverRSS
	}
	return result, nil
}

func round1(x float64) float64 { return float64(int(x*10+0.5)) / 10 }

// --- connections --------------------------------------------------------------------------

var dialer = websocket.Dialer{
	HandshakeTimeout:  60 * time.Second,
	EnableCompression: false,
	ReadBufferSize:    4096,
	WriteBufferSize:   4096,
}

func dial(url string) (*websocket.Conn, error) {
	ws, _, err := dialer.Dial(url, http.Header{})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 22)
	return ws, nil
}

// bounded runs jobs 0..n-1 with at most limit in flight: opening thousands at once only
// measures the listen backlog. The first error wins.
func bounded(n, limit int, job func(i int) error) error {
	var wg sync.WaitGroup
	slots := make(chan struct{}, limit)
	var first atomic.Value
	for i := 0; i < n; i++ {
		if first.Load() != nil {
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-slots; wg.Done() }()
			if err := job(i); err != nil {
				first.CompareAndSwap(nil, err)
			}
		}(i)
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

// --- echo ---------------------------------------------------------------------------------

func runEcho(o *options) (map[string]any, error) {
	frame := []byte(`{"type":"message","id":"c1","content_type":"text","content":{"text":"` +
		pingText + `"}}`)
	conns := make([]*websocket.Conn, o.connections)
	err := bounded(o.connections, o.concurrency, func(i int) error {
		ws, err := dial(o.url)
		conns[i] = ws
		return err
	})
	if err != nil {
		return nil, err
	}
	w := newWindow()
	stop := make(chan struct{})
	for _, ws := range conns {
		go func(ws *websocket.Conn) {
			for {
				sent := time.Now()
				if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
					w.failed(err)
					return
				}
				if _, _, err := ws.ReadMessage(); err != nil {
					select {
					case <-stop:
					default:
						w.failed(err)
					}
					return
				}
				w.record(time.Since(sent))
			}
		}(ws)
	}
	result, err := measure(w, o, fmt.Sprintf("bare echo, %d conns", o.connections))
	close(stop)
	closeAll(conns)
	if err != nil {
		return nil, err
	}
	result["connections"] = o.connections
	// One echo is one frame in and one frame out on the server.
	result["messages_per_s"] = result["round_trips_per_s"]
	return result, nil
}

func closeAll(conns []*websocket.Conn) {
	for _, ws := range conns {
		if ws != nil {
			_ = ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
				time.Now().Add(time.Second))
			_ = ws.Close()
		}
	}
}

// closeAndDrain closes normally and waits for the server's close (or EOF), so each
// connection is whole before the next.
func closeAndDrain(ws *websocket.Conn) {
	_ = ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
		time.Now().Add(time.Second))
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
	}
}

// --- live sessions ------------------------------------------------------------------------

// frame holds the fields of a server frame the load generator looks at.
type frame struct {
	Type           string          `json:"type"`
	Sender         string          `json:"sender"`
	ContentType    string          `json:"content_type"`
	ConversationID string          `json:"conversation_id"`
	ResumeToken    string          `json:"resume_token"`
	Content        json.RawMessage `json:"content"`
}

func readFrame(ws *websocket.Conn) (*frame, []byte, error) {
	_, raw, err := ws.ReadMessage()
	if err != nil {
		return nil, nil, err
	}
	var f frame
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, raw, fmt.Errorf("not JSON from the server: %q", raw)
	}
	if f.Type == "error" {
		return nil, raw, fmt.Errorf("server refused: %s", raw)
	}
	return &f, raw, nil
}

func hello(ws *websocket.Conn, fields string) (*frame, error) {
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","v":1,`+fields+`}`)); err != nil {
		return nil, err
	}
	f, raw, err := readFrame(ws)
	if err != nil {
		return nil, err
	}
	if f.Type != "welcome" {
		return nil, fmt.Errorf("expected a welcome, got %s", raw)
	}
	return f, nil
}

func quote(s string) string {
	out, _ := json.Marshal(s)
	return string(out)
}

// agent answers every user text in every chat it holds, with an id (as the desk sends it),
// so the server acks the answer rather than echoing it back.
func agent(ws *websocket.Conn, w *window, stop <-chan struct{}) {
	answered := 0
	for {
		f, _, err := readFrame(ws)
		if err != nil {
			select {
			case <-stop:
			default:
				w.failed(fmt.Errorf("agent: %w", err))
			}
			return
		}
		if f.Type != "entry" || f.Sender != "user" || f.ContentType != "text" {
			continue
		}
		answered++
		reply := `{"type":"message","id":"a` + strconv.Itoa(answered) +
			`","conversation_id":` + quote(f.ConversationID) +
			`,"content_type":"text","content":{"text":"re: ` + pingText + `"}}`
		if err := ws.WriteMessage(websocket.TextMessage, []byte(reply)); err != nil {
			w.failed(fmt.Errorf("agent: %w", err))
			return
		}
	}
}

func isAgentJoined(f *frame) bool {
	if f.Type != "entry" || f.ContentType != "notice" {
		return false
	}
	var c struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(f.Content, &c)
	return c.Code == "agent_joined"
}

func openUser(o *options, index int) (*websocket.Conn, error) {
	ws, err := dial(o.url)
	if err != nil {
		return nil, err
	}
	if _, err := hello(ws, `"role":"user","bot_id":`+quote(o.botID)+
		`,"metadata":{"name":"load user `+strconv.Itoa(index)+`"}`); err != nil {
		ws.Close()
		return nil, err
	}
	start := `{"type":"message","content_type":"payload","content":{"payload":"` + sessionStart + `"}}`
	if err := ws.WriteMessage(websocket.TextMessage, []byte(start)); err != nil {
		ws.Close()
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(o.setupTimeout))
	for {
		f, _, err := readFrame(ws)
		if err != nil {
			ws.Close()
			return nil, fmt.Errorf("user %d waiting for pickup: %w", index, err)
		}
		if isAgentJoined(f) {
			break
		}
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, nil
}

func runSessions(o *options) (map[string]any, error) {
	setupStarted := time.Now()
	w := newWindow()
	stop := make(chan struct{})
	var agents []*websocket.Conn
	for _, token := range strings.Split(o.agentTokens, ",") {
		ws, err := dial(o.url)
		if err != nil {
			return nil, err
		}
		if _, err := hello(ws, `"role":"agent","token":`+quote(token)); err != nil {
			return nil, err
		}
		if err := ws.WriteMessage(websocket.TextMessage,
			[]byte(`{"type":"presence","status":"online"}`)); err != nil {
			return nil, err
		}
		agents = append(agents, ws)
		go agent(ws, w, stop)
	}
	users := make([]*websocket.Conn, o.users)
	var opened atomic.Int64
	err := bounded(o.users, o.concurrency, func(i int) error {
		ws, err := openUser(o, i)
		users[i] = ws
		if n := opened.Add(1); n%100 == 0 {
			progress(map[string]any{"label": "setting up", "users": n, "of": o.users})
		}
		return err
	})
	if err != nil {
		close(stop)
		closeAll(users)
		closeAll(agents)
		return nil, err
	}
	setupSeconds := time.Since(setupStarted).Seconds()
	// Unique ids per message: a conversation takes a repeated id with the same text as a resend.
	head := `{"type":"message","id":"u`
	tail := `","content_type":"text","content":{"text":"` + pingText + `"}}`
	for _, ws := range users {
		go func(ws *websocket.Conn) {
			buf := make([]byte, 0, 160)
			for sent := 1; ; sent++ {
				buf = append(append(strconv.AppendInt(append(buf[:0], head...), int64(sent), 10)), tail...)
				began := time.Now()
				if err := ws.WriteMessage(websocket.TextMessage, buf); err != nil {
					w.failed(err)
					return
				}
				for {
					f, _, err := readFrame(ws)
					if err != nil {
						select {
						case <-stop:
						default:
							w.failed(fmt.Errorf("user: %w", err))
						}
						return
					}
					if f.Type == "entry" && f.Sender == "agent" {
						break
					}
				}
				w.record(time.Since(began))
			}
		}(ws)
	}
	result, err := measure(w, o, fmt.Sprintf("switchover, %d sessions", o.users))
	close(stop)
	closeAll(users)
	closeAll(agents)
	if err != nil {
		return nil, err
	}
	result["sessions"] = o.users
	result["agents"] = len(agents)
	result["connections"] = o.users + len(agents)
	result["setup_seconds"] = setupSeconds
	// A round trip is two routed messages: the user's to the agent, the agent's to the user.
	result["messages_per_s"] = 2 * result["round_trips_per_s"].(float64)
	return result, nil
}

// --- connect (handshakes and hellos) ------------------------------------------------------

func runConnect(o *options) (map[string]any, error) {
	// With -resume, the conversations to come back to are opened first, outside the timing.
	tokens := make([]string, o.count)
	if o.resume {
		open := func(i int) error {
			ws, err := dial(o.url)
			if err != nil {
				return err
			}
			defer ws.Close()
			welcome, err := hello(ws, `"role":"user","bot_id":`+quote(o.botID))
			if err != nil {
				return err
			}
			tokens[i] = welcome.ResumeToken
			closeAndDrain(ws)
			return nil
		}
		if err := bounded(o.count, o.concurrency, open); err != nil {
			return nil, err
		}
	}
	start := sample(o.serverPid)
	var done atomic.Int64
	one := func(i int) error {
		ws, err := dial(o.url)
		if err != nil {
			return err
		}
		defer ws.Close()
		if o.resume {
			if _, err := hello(ws, `"role":"user","last_seq":0,"resume_token":`+quote(tokens[i])); err != nil {
				return err
			}
		} else if o.hello {
			if _, err := hello(ws, `"role":"user","bot_id":`+quote(o.botID)); err != nil {
				return err
			}
		}
		closeAndDrain(ws)
		if n := done.Add(1); n%1000 == 0 {
			progress(map[string]any{"label": "connect", "done": n, "of": o.count})
		}
		return nil
	}
	if err := bounded(o.count, o.concurrency, one); err != nil {
		return nil, err
	}
	end := sample(o.serverPid)
	elapsed := end.wall.Sub(start.wall).Seconds()
	result := map[string]any{
		"seconds":             elapsed,
		"count":               o.count,
		"hello":               o.hello,
		"resume":              o.resume,
		"per_s":               float64(o.count) / elapsed,
		"client_cpu_fraction": (end.own - start.own) / elapsed,
		"load_generator":      "go",
	}
	if start.hasServer && end.hasServer {
		result["server_cpu_fraction"] = (end.server - start.server) / elapsed
		result["server_cpu_seconds"] = end.server - start.server
		result["server_cpu_us_per_connection"] = (end.server - start.server) / float64(o.count) * 1e6
	}
	return result, nil
}
