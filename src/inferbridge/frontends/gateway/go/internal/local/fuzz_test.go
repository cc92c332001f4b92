package local

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net/http/httptest"
	"net/textproto"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
)

// Native fuzz targets of the backend frame codec and of the HTTP request reading
// (issue #16). `go test` runs each over its seed corpus (below, and testdata/fuzz/ for
// kept regressions); `go test -fuzz FuzzX -fuzztime 20s` searches for more.

// frameBytes is one frame as the backend writes it.
func frameBytes(kind byte, id uint64, body []byte) []byte {
	var b bytes.Buffer
	writeBackendFrame(&b, kind, id, body)
	return b.Bytes()
}

// FuzzBackendFrames feeds arbitrary bytes to the reader of the backend's frames: every
// input ends in an error or EOF, never a panic, a hang or a huge allocation.
func FuzzBackendFrames(f *testing.F) {
	limits := binary.LittleEndian.AppendUint16(nil, 1)
	limits = append(appendStr16(limits, "m"), 2, 0, 0, 0)
	for _, seed := range [][]byte{
		nil,
		frameBytes(kindHealth, 0, []byte("\x01")),
		frameBytes(kindHealth, 0, []byte("\x02svc")),
		frameBytes(kindHealth, 0, nil),
		frameBytes(kindLimits, 0, limits),
		frameBytes(kindLimits, 0, []byte{5, 0, 1}),
		frameBytes(kindReply, 7, []byte{0, 'x'}),
		frameBytes(kindReply, 7, nil),
		frameBytes(kindReplyHTTP, 7, []byte{200, 0, 0, 0, 'o', 'k'}),
		frameBytes(kindStreamMsg, 9, []byte("m")),
		frameBytes(kindStreamEnd, 9, nil),
		frameBytes(kindStreamAck, 9, []byte{1, 0, 0, 0}),
		frameBytes(kindReplyHTTPStart, 7, []byte{200, 0, 0, 0, 'a'}),
		frameBytes(kindReplyHTTPChunk, 7, []byte("b")),
		frameBytes(kindReplyHTTPEnd, 7, []byte{0, 'c'}),
		frameBytes(kindReplyHTTPEnd, 7, nil),
		frameBytes(kindMetricsPull, 3, nil),
		frameBytes(kindDescriptors, 0, []byte("late")),
		frameBytes(200, 0, []byte("unknown kind")),
		{0xff, 0xff, 0xff, 0xff, kindHealth, 0, 0, 0, 0, 0, 0, 0, 0}, // 4 GiB control frame
		{0xff, 0xff, 0xff, 0xff, kindReply, 1, 0, 0, 0, 0, 0, 0, 0},
		{3, 0, 0, 0, kindHealth, 0, 0, 0, 0, 0, 0, 0, 0}, // length below 9
		frameBytes(kindHealth, 0, []byte("\x01"))[:7],
	} {
		f.Add(seed)
	}
	gwFile, beFile := socketpair(f)
	be := fileConn(f, beFile)
	gwConn := fileConn(f, gwFile)
	f.Cleanup(func() { be.Close(); gwConn.Close() })
	if err := writeBackendFrame(be, kindDescriptors, 0, testDescriptors(f)); err != nil {
		f.Fatal(err)
	}
	g, err := newGateway(gwConn, config{maxRecvBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	go func() { // nobody writes the frames out: drop them
		for fr := range g.out {
			if fr.raw != nil {
				putBuf(fr.raw)
			}
		}
	}()
	f.Fuzz(func(t *testing.T, data []byte) {
		g.br = bufio.NewReader(bytes.NewReader(data))
		var hdr [frameHeader]byte
		for i := 0; ; i++ {
			if err := g.readFrame(hdr[:]); err != nil {
				return
			}
			if i > len(data) {
				t.Fatalf("%d frames read from %d bytes", i, len(data))
			}
		}
	})
}

// FuzzReplyHTTP writes arbitrary REPLY-HTTP bodies: a well-formed one is written as
// given, anything else is 502, never a panic.
func FuzzReplyHTTP(f *testing.F) {
	reply := func(status uint16, headers [][2]string, body string) []byte {
		b := binary.LittleEndian.AppendUint16(nil, status)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(headers)))
		for _, kv := range headers {
			b = appendHeader(b, kv[0], kv[1])
		}
		return append(b, body...)
	}
	f.Add(reply(200, nil, "ok"))
	f.Add(reply(404, [][2]string{{"content-type", "application/json"}}, `{"error": "x"}`))
	f.Add(reply(200, [][2]string{{"content-length", "0"}}, ""))
	f.Add(reply(99, nil, ""))
	f.Add(reply(200, [][2]string{{"x", "y"}}, "")[:9])
	f.Add([]byte{200})
	g := &gateway{}
	f.Fuzz(func(t *testing.T, b []byte) {
		w := httptest.NewRecorder()
		status, _ := g.writeReply(w, b)
		if status != w.Code || status < 100 || status > 999 {
			t.Fatalf("status %d, recorded %d", status, w.Code)
		}
	})
}

// FuzzFrameCodec round-trips CALL frames through writeFrame and the fake backend's
// decoder.
func FuzzFrameCodec(f *testing.F) {
	f.Add("/inference.GRPCInferenceService/ModelInfer", int64(-1), "traceparent", "00-ab-cd-01", []byte("msg"))
	f.Add("", int64(5), "", "", []byte(nil))
	f.Add("/a/b", int64(1<<40), "x-user-id", strings.Repeat("v", 300), bytes.Repeat([]byte{0}, 70000))
	f.Fuzz(func(t *testing.T, method string, timeoutUS int64, key, value string, body []byte) {
		if len(method) > 0xffff || len(key) > 0xffff {
			return
		}
		var meta []string
		if key != "" {
			meta = []string{key, value}
		}
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		var scratch [frameHeader + 2]byte
		fr := frame{kind: kindCall, id: 42, method: method, timeoutUS: timeoutUS, meta: meta,
			body: mem.BufferSlice{mem.SliceBuffer(bytes.Clone(body))}}
		if err := writeFrame(bw, scratch[:], &fr); err != nil || bw.Flush() != nil {
			t.Fatal(err)
		}
		got, err := readBackendFrame(&out)
		if err != nil || got.kind != kindCall || got.id != 42 || out.Len() != 0 {
			t.Fatalf("frame %+v, %v, %d bytes left", got, err, out.Len())
		}
		m, tus, md, msg := got.callMeta(t)
		if m != method || tus != timeoutUS || !bytes.Equal(msg, body) || len(md) != len(meta)/2 ||
			(len(md) == 1 && (md[0][0] != key || md[0][1] != value)) {
			t.Fatalf("decoded %q %d %q %q", m, tus, md, msg)
		}
	})
}

// FuzzHTTPRequest sends arbitrary bytes to the HTTP listener (then half-closes) with a
// backend that answers every forwarded request 200 "ok": whatever the gateway answers
// itself is an error status; a success always carries the backend's body.
func FuzzHTTPRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
		strictHead + "Content-Length: 2\r\n\r\n{}",
		strictHead + "Content-Length: 20\r\n\r\n{}",
		strictHead + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
		strictHead + "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		strictHead + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		strictHead + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
		strictHead + "Transfer-Encoding: chunked\r\n\r\n2;ext=1\r\n{}\r\n0\r\nTrailer: x\r\n\r\n",
		strictHead + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
		strictHead + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
		strictHead + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		strictHead + "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v2/models/m/infer HTTP/1.0\r\n\r\n{}",
		"GET /v2/models/%zz/infer HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET http://other/v2 HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	url := okGateway(f, 1<<10)
	f.Fuzz(func(t *testing.T, data []byte) {
		out := rawExchange(t, url, data, true)
		// Each answer starts with a status line; "ok" bodies never contain one.
		for _, answer := range splitAnswers(out) {
			tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(answer)))
			line, err := tp.ReadLine()
			if err != nil {
				t.Fatalf("answer %q: %v", answer, err)
			}
			_, code, _ := strings.Cut(line, " ")
			status, _ := strconv.Atoi(code[:min(3, len(code))])
			header, _ := tp.ReadMIMEHeader()
			if status/100 == 2 && header.Get("Content-Length") != "2" {
				t.Fatalf("success without the backend's body: %q", answer)
			}
		}
	})
}

// splitAnswers cuts the bytes of pipelined HTTP/1.x answers at their status lines.
func splitAnswers(out []byte) [][]byte {
	var answers [][]byte
	for len(out) > 0 {
		next := bytes.Index(out[1:], []byte("\nHTTP/1."))
		if next < 0 {
			return append(answers, out)
		}
		answers = append(answers, out[:next+2])
		out = out[next+2:]
	}
	return answers
}
