package local

import (
	"fmt"
	"io"
	"net/http"

	"github.com/inferbridge/inferbridge/gateway/internal/frontend"
)

// Streamed REST replies (REPLY-HTTP-START, REPLY-HTTP-CHUNK, REPLY-HTTP-END; see the
// package comment): the backend's ASGI app sent its body in parts (more_body), as
// generate_stream's Server-Sent Events do. The gateway writes the status and headers
// without a Content-Length (chunked transfer encoding), then each part, flushed, as it
// arrives; STREAM-ACK frames give the backend its window back.

// httpPart is one REPLY-HTTP-CHUNK or the REPLY-HTTP-END, handed by the reader.
type httpPart struct {
	buf    *[]byte // the bytes to write (pooled)
	end    bool    // REPLY-HTTP-END: the last part
	broken bool    // END with flag 1: the app failed, abort the response
}

// httpStream is one streamed reply being relayed.
type httpStream struct {
	parts chan httpPart // capacity streamWindow+1: the window's chunks, then END
}

// readHTTPStreamFrame reads a REPLY-HTTP-START (the request's reply, claimed like a
// REPLY-HTTP), -CHUNK or -END of n body bytes.
func (g *gateway) readHTTPStreamFrame(kind byte, id uint64, n int) error {
	if kind == kindReplyHTTPStart {
		c := g.claim(id, true)
		if c == nil { // cancelled, or never ours: ignore
			_, err := g.br.Discard(n)
			return err
		}
		bp, err := g.readPooled(n)
		if err != nil {
			c.http <- nil // claimed, so it must get an answer
			return err
		}
		st := &httpStream{parts: make(chan httpPart, streamWindow+1)}
		g.httpStreams.add(id, st)
		c.stream = st
		c.http <- bp
		return nil
	}
	var st *httpStream
	if kind == kindReplyHTTPEnd {
		st = g.httpStreams.remove(id)
	} else {
		st = g.httpStreams.get(id)
	}
	if st == nil || (kind == kindReplyHTTPEnd && n < 1) {
		_, err := g.br.Discard(n)
		if err == nil && st != nil {
			err = fmt.Errorf("backend: REPLY-HTTP-END %d has no flag", id)
		}
		return err
	}
	part := httpPart{end: kind == kindReplyHTTPEnd}
	if part.end {
		flag, err := g.br.ReadByte()
		if err != nil {
			return err
		}
		part.broken = flag != 0
		n--
	}
	bp, err := g.readPooled(n)
	if err != nil {
		return err
	}
	part.buf = bp
	select {
	case st.parts <- part:
		return nil
	default:
		putBuf(bp)
		return fmt.Errorf("backend: streamed reply %d sent more than %d unacknowledged chunks", id, streamWindow)
	}
}

// readPooled reads n bytes into a pooled buffer.
func (g *gateway) readPooled(n int) (*[]byte, error) {
	bp := getBuf()
	*bp = grow((*bp)[:0], n)
	if _, err := io.ReadFull(g.br, *bp); err != nil {
		putBuf(bp)
		return nil, err
	}
	return bp, nil
}

// relayStream writes a streamed reply: start is the REPLY-HTTP-START body, the parts
// follow on st. It returns the status (frontend.Aborted or-ed in when the reply could not be
// finished) and the body bytes written.
func (g *gateway) relayStream(w http.ResponseWriter, r *http.Request, id uint64, st *httpStream, start *[]byte) (int, int) {
	status, body, ok := writeHead(w, *start, true)
	if !ok {
		putBuf(start)
		g.dropStream(id)
		return frontend.WriteError(w, http.StatusBadGateway, frontend.ErrorBody("malformed reply from the backend"), false)
	}
	rc := http.NewResponseController(w)
	n := len(body)
	_, err := w.Write(body)
	putBuf(start)
	ctx := r.Context()
	for {
		if err == nil {
			err = rc.Flush()
		}
		if err != nil { // the client is gone
			g.dropStream(id)
			return frontend.StatusClientGone, n
		}
		select { // START and each CHUNK written: one more may come
		case g.out <- frame{kind: kindStreamAck, id: id, count: 1}:
		case <-g.dead:
			return status | frontend.Aborted, n
		}
		var p httpPart
		select {
		case p = <-st.parts:
		case <-ctx.Done():
			g.dropStream(id)
			return frontend.StatusClientGone, n
		case <-g.dead:
			return status | frontend.Aborted, n
		}
		n += len(*p.buf)
		_, err = w.Write(*p.buf)
		putBuf(p.buf)
		if p.end {
			if p.broken {
				return status | frontend.Aborted, n
			}
			return status, n
		}
	}
}

// dropStream gives up on a streamed reply: the backend is told to stop (CANCEL) unless
// its END has already been read.
func (g *gateway) dropStream(id uint64) {
	if g.httpStreams.remove(id) == nil {
		return
	}
	select {
	case g.out <- frame{kind: kindCancel, id: id}:
	case <-g.dead:
	}
}
