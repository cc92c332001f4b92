package local

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
)

// The backend socket: one writer goroutine and one reader goroutine, frames as laid
// out in the package comment.

// Frame kinds of the backend protocol (see the package comment).
const (
	kindCall        = 1
	kindCancel      = 2
	kindReply       = 3
	kindHealth      = 4
	kindShutdown    = 5
	kindDescriptors = 6
	kindHTTP        = 7
	kindReplyHTTP   = 8
	kindLimits      = 9
	kindMetricsPull = 10
	kindMetrics     = 11
	kindStreamOpen  = 12
	kindStreamMsg   = 13
	kindStreamClose = 14
	kindStreamEnd   = 15
	kindStreamAck   = 16

	kindReplyHTTPStart = 17
	kindReplyHTTPChunk = 18
	kindReplyHTTPEnd   = 19

	kindAccess = 20 // a request refused here, for the backend's access log (auth.go)
)

// frameHeader is u32 length | u8 kind | u64 id; the length counts kind and id.
const frameHeader = 4 + 1 + 8

// frame is one outgoing frame, queued by value to the writer.
type frame struct {
	kind      byte
	id        uint64
	method    string          // CALL and STREAM-OPEN only
	timeoutUS int64           // CALL and STREAM-OPEN only
	meta      []string        // CALL and STREAM-OPEN only: forwarded metadata, name, value pairs
	body      mem.BufferSlice // CALL and STREAM-MSG only; the writer frees it once written
	count     uint32          // STREAM-ACK only
	raw       *[]byte         // HTTP and METRICS: the whole body; the writer pools it once written
}

// reply is a REPLY handed by the reader to the waiting call.
type reply struct {
	code codes.Code
	data mem.Buffer // response message when code is OK (nil when empty)
	msg  string     // error message otherwise
}

// writeLoop writes queued frames, flushing only when the queue is empty so that frames
// are coalesced into few writes under load.
func (g *gateway) writeLoop() {
	bw := bufio.NewWriterSize(g.backend, 64<<10)
	var scratch [frameHeader + 2]byte // reused header buffer
	for {
		var f frame
		select {
		case f = <-g.out:
		default:
			if err := bw.Flush(); err != nil {
				g.fail(fmt.Errorf("backend: write: %w", err))
				return
			}
			select {
			case f = <-g.out:
			case <-g.dead:
				return
			}
		}
		if err := writeFrame(bw, scratch[:], &f); err != nil {
			g.fail(fmt.Errorf("backend: write: %w", err))
			return
		}
	}
}

func writeFrame(bw *bufio.Writer, scratch []byte, f *frame) error {
	length := 1 + 8
	if f.raw != nil {
		binary.LittleEndian.PutUint32(scratch[0:], uint32(length+len(*f.raw)))
		scratch[4] = f.kind
		binary.LittleEndian.PutUint64(scratch[5:], f.id)
		bw.Write(scratch[:frameHeader])
		_, err := bw.Write(*f.raw)
		putBuf(f.raw)
		return err
	}
	opens := f.kind == kindCall || f.kind == kindStreamOpen
	switch {
	case opens:
		length += 2 + len(f.method) + 8 + metadataLen(f.meta) + f.body.Len()
	case f.kind == kindStreamMsg:
		length += f.body.Len()
	case f.kind == kindStreamAck:
		length += 4
	}
	binary.LittleEndian.PutUint32(scratch[0:], uint32(length))
	scratch[4] = f.kind
	binary.LittleEndian.PutUint64(scratch[5:], f.id)
	if !opens && f.body == nil && f.kind != kindStreamAck {
		_, err := bw.Write(scratch[:frameHeader])
		return err
	}
	defer f.body.Free()
	if opens {
		binary.LittleEndian.PutUint16(scratch[frameHeader:], uint16(len(f.method)))
		bw.Write(scratch[:frameHeader+2])
		bw.WriteString(f.method)
		binary.LittleEndian.PutUint64(scratch[0:], uint64(f.timeoutUS))
		bw.Write(scratch[:8])
		writeMetadata(bw, scratch, f.meta)
	} else {
		bw.Write(scratch[:frameHeader])
	}
	if f.kind == kindStreamAck {
		binary.LittleEndian.PutUint32(scratch[0:], f.count)
		bw.Write(scratch[:4])
	}
	for _, b := range f.body {
		bw.Write(b.ReadOnlyData())
	}
	// bufio.Writer keeps its first error; report it once the frame is done.
	_, err := bw.Write(nil)
	return err
}

func parseHeader(hdr []byte) (bodyLen int, kind byte, id uint64, err error) {
	length := binary.LittleEndian.Uint32(hdr[0:])
	if length < 1+8 {
		return 0, 0, 0, fmt.Errorf("backend: frame length %d is below 9", length)
	}
	return int(length - 9), hdr[4], binary.LittleEndian.Uint64(hdr[5:]), nil
}

// readLoop dispatches the backend's frames until the backend fails.
func (g *gateway) readLoop() {
	var hdr [frameHeader]byte
	for {
		err := g.readFrame(hdr[:])
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("backend closed the connection (%w)", err)
			}
			g.fail(err)
			return
		}
	}
}

func (g *gateway) readFrame(hdr []byte) error {
	if _, err := io.ReadFull(g.br, hdr); err != nil {
		return err
	}
	n, kind, id, err := parseHeader(hdr)
	if err != nil {
		return err
	}
	switch kind {
	case kindReply:
		if n < 1 {
			return fmt.Errorf("backend: REPLY %d has no code", id)
		}
		code, err := g.br.ReadByte()
		if err != nil {
			return err
		}
		n--
		c := g.claim(id, false)
		if c == nil { // cancelled, or never ours: ignore
			_, err := g.br.Discard(n)
			return err
		}
		r, err := g.readReply(codes.Code(code), n)
		if err != nil {
			// The call was claimed, so it must get an answer.
			r = reply{code: codes.Unavailable, msg: "inferbridge: the backend is gone"}
		}
		c.reply <- r
		return err
	case kindReplyHTTP:
		c := g.claim(id, true)
		if c == nil { // cancelled, or never ours: ignore
			_, err := g.br.Discard(n)
			return err
		}
		bp := getBuf()
		*bp = grow((*bp)[:0], n)
		if _, err := io.ReadFull(g.br, *bp); err != nil {
			putBuf(bp)
			c.http <- nil // claimed, so it must get an answer
			return err
		}
		c.http <- bp
	case kindStreamMsg, kindStreamEnd, kindStreamAck:
		return g.readStreamFrame(kind, id, n)
	case kindReplyHTTPStart, kindReplyHTTPChunk, kindReplyHTTPEnd:
		return g.readHTTPStreamFrame(kind, id, n)
	case kindMetricsPull:
		if _, err := g.br.Discard(n); err != nil {
			return err
		}
		go g.answerMetrics(id) // never block the reader on the writer
	case kindLimits:
		body, err := g.readBody(n)
		if err != nil {
			return err
		}
		return g.setLimits(body)
	case kindHealth:
		body, err := g.readBody(n)
		if err != nil || len(body) < 1 {
			return errors.Join(err, fmt.Errorf("backend: empty HEALTH frame"))
		}
		g.fe.Health().SetServingStatus(string(body[1:]), healthpb.HealthCheckResponse_ServingStatus(body[0]))
	case kindShutdown:
		body, err := g.readBody(n)
		if err != nil || len(body) < 4 {
			return errors.Join(err, fmt.Errorf("backend: SHUTDOWN frame shorter than 4 bytes"))
		}
		grace := time.Duration(binary.LittleEndian.Uint32(body)) * time.Millisecond
		g.shutdownOnce.Do(func() { go g.drain(grace) })
	default: // a later DESCRIPTORS or an unknown kind: skip it
		_, err := g.br.Discard(n)
		return err
	}
	return nil
}

// answerMetrics answers METRICS-PULL id with a METRICS frame.
func (g *gateway) answerMetrics(id uint64) {
	bp := getBuf()
	b, err := g.metrics.appendText((*bp)[:0])
	*bp = b
	if err != nil { // a partial text is still the best answer; Gather reports per family
		fmt.Fprintf(os.Stderr, "inferbridge-gateway: gathering metrics: %v\n", err)
	}
	select {
	case g.out <- frame{kind: kindMetrics, id: id, raw: bp}:
	case <-g.dead:
		putBuf(bp)
	}
}

func (g *gateway) readReply(code codes.Code, n int) (reply, error) {
	if code != codes.OK {
		msg, err := g.readBody(n)
		return reply{code: code, msg: string(msg)}, err
	}
	if n == 0 {
		return reply{}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(n)
	if _, err := io.ReadFull(g.br, *buf); err != nil {
		pool.Put(buf)
		return reply{}, err
	}
	return reply{data: mem.NewBuffer(buf, pool)}, nil
}

// maxSmallFrame bounds the bodies readBody reads whole before they are parsed (control
// frames, error messages): a corrupt length must fail, not allocate up to 4 GiB.
const maxSmallFrame = 16 << 20

func (g *gateway) readBody(n int) ([]byte, error) {
	if n > maxSmallFrame {
		return nil, fmt.Errorf("backend: a control frame or error message of %d bytes (over %d)", n, maxSmallFrame)
	}
	body := make([]byte, n)
	_, err := io.ReadFull(g.br, body)
	return body, err
}
