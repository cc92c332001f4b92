package inferbridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Code classifies a failure the same way over both transports; its names are the gRPC
// status code names.
type Code int

// The failure classes. The OIP error table maps REST statuses and gRPC codes onto them:
// 400 and INVALID_ARGUMENT are CodeInvalidArgument, 404 and NOT_FOUND CodeNotFound,
// 413/429 and RESOURCE_EXHAUSTED CodeResourceExhausted, 503 and UNAVAILABLE
// CodeUnavailable, 504 and DEADLINE_EXCEEDED CodeDeadlineExceeded, 500 and INTERNAL
// CodeInternal.
const (
	CodeUnknown Code = iota
	CodeInvalidArgument
	CodeNotFound
	CodeResourceExhausted
	CodeUnavailable
	CodeDeadlineExceeded
	CodeCanceled
	CodeInternal
	CodeUnimplemented
	CodeFailedPrecondition
	CodeAborted
	// CodeUnauthenticated: no credential, or one the server does not accept (REST 401,
	// gRPC UNAUTHENTICATED).
	CodeUnauthenticated
	// CodePermissionDenied: the credential's principal lacks the scope (gRPC
	// PERMISSION_DENIED; REST 403 whose message is the server's "principal '...' may not").
	CodePermissionDenied
)

var codeNames = [...]string{
	CodeUnknown:            "UNKNOWN",
	CodeInvalidArgument:    "INVALID_ARGUMENT",
	CodeNotFound:           "NOT_FOUND",
	CodeResourceExhausted:  "RESOURCE_EXHAUSTED",
	CodeUnavailable:        "UNAVAILABLE",
	CodeDeadlineExceeded:   "DEADLINE_EXCEEDED",
	CodeCanceled:           "CANCELLED",
	CodeInternal:           "INTERNAL",
	CodeUnimplemented:      "UNIMPLEMENTED",
	CodeFailedPrecondition: "FAILED_PRECONDITION",
	CodeAborted:            "ABORTED",
	CodeUnauthenticated:    "UNAUTHENTICATED",
	CodePermissionDenied:   "PERMISSION_DENIED",
}

// String is the gRPC name of the code, such as "NOT_FOUND".
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("Code(%d)", int(c))
}

// Sentinel errors: errors.Is(err, ErrNotFound) is true for every *Error whose Code is
// CodeNotFound, whichever transport produced it.
var (
	ErrInvalidArgument   = errors.New("inferbridge: invalid argument")
	ErrNotFound          = errors.New("inferbridge: not found")
	ErrResourceExhausted = errors.New("inferbridge: resource exhausted")
	ErrUnavailable       = errors.New("inferbridge: unavailable")
	ErrDeadlineExceeded  = errors.New("inferbridge: deadline exceeded")
	ErrCanceled          = errors.New("inferbridge: canceled")
	ErrInternal          = errors.New("inferbridge: internal server error")
	ErrUnimplemented     = errors.New("inferbridge: unimplemented")
	// ErrFailedPrecondition: the server refuses the call in its present state, such as a
	// load or unload when its model control mode is not "explicit".
	ErrFailedPrecondition = errors.New("inferbridge: failed precondition")
	// ErrAborted: the call conflicted with another in progress, such as a second load of a
	// model that is loading; retrying later may succeed.
	ErrAborted = errors.New("inferbridge: aborted")
	// ErrUnauthenticated: the server wants a credential (WithAPIKey, WithBearerToken, a
	// client certificate) or refused the one sent.
	ErrUnauthenticated = errors.New("inferbridge: unauthenticated")
	// ErrPermissionDenied: the credential is good but its scopes do not allow the call.
	ErrPermissionDenied = errors.New("inferbridge: permission denied")
)

var sentinels = map[Code]error{
	CodeInvalidArgument:    ErrInvalidArgument,
	CodeNotFound:           ErrNotFound,
	CodeResourceExhausted:  ErrResourceExhausted,
	CodeUnavailable:        ErrUnavailable,
	CodeDeadlineExceeded:   ErrDeadlineExceeded,
	CodeCanceled:           ErrCanceled,
	CodeInternal:           ErrInternal,
	CodeUnimplemented:      ErrUnimplemented,
	CodeFailedPrecondition: ErrFailedPrecondition,
	CodeAborted:            ErrAborted,
	CodeUnauthenticated:    ErrUnauthenticated,
	CodePermissionDenied:   ErrPermissionDenied,
}

// Error is every failure the clients return: the class, what the server said, and the
// transport detail. Match it with errors.Is (the sentinels above, context.DeadlineExceeded
// and context.Canceled for client-side context ends) or errors.As.
type Error struct {
	// Op names the call that failed, such as "infer iris_onnx".
	Op string
	// Code classifies the failure.
	Code Code
	// HTTPStatus is the REST response status; 0 over gRPC or when no response came.
	HTTPStatus int
	// GRPCCode is the numeric gRPC status code; 0 over REST.
	GRPCCode uint32
	// Message is the server's error message, or a description of a client-side failure.
	Message string
	// RetryAfter is the server's hint on a 429 (its Retry-After header) or a gRPC
	// RESOURCE_EXHAUSTED (its retry-after trailer), else 0.
	RetryAfter time.Duration
	// Err is the underlying error (transport, context or gRPC status error), if any.
	Err error
}

// Error formats the failure as "inferbridge: OP: CODE (HTTP n): message".
func (e *Error) Error() string {
	detail := ""
	if e.HTTPStatus != 0 {
		detail = fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	}
	return fmt.Sprintf("inferbridge: %s: %s%s: %s", e.Op, e.Code, detail, e.Message)
}

// Is makes errors.Is(err, ErrNotFound) and the other sentinels match by Code.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// Unwrap returns the underlying transport, context or gRPC status error.
func (e *Error) Unwrap() error { return e.Err }

// CodeOf is the Code of err: its *Error's Code, CodeDeadlineExceeded or CodeCanceled for
// context errors, CodeUnknown otherwise (and for nil).
func CodeOf(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return CodeUnknown
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	}
	return CodeUnknown
}

// CodeFromHTTPStatus classifies a REST error status as the OIP error table does.
func CodeFromHTTPStatus(status int) Code {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnprocessableEntity:
		return CodeInvalidArgument
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusUnauthorized:
		return CodeUnauthenticated
	case http.StatusForbidden:
		return CodeFailedPrecondition
	case http.StatusConflict:
		return CodeAborted
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return CodeResourceExhausted
	case http.StatusServiceUnavailable:
		return CodeUnavailable
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return CodeDeadlineExceeded
	case http.StatusInternalServerError:
		return CodeInternal
	case http.StatusNotImplemented:
		return CodeUnimplemented
	}
	if status >= 400 && status < 500 {
		return CodeInvalidArgument
	}
	return CodeUnknown
}

// clientError is a failure detected before the request left (bad input, bad URL).
func clientError(op string, code Code, err error) *Error {
	return &Error{Op: op, Code: code, Message: err.Error(), Err: err}
}

// contextError classifies a failure caused by the context ending, or nil if it did not.
func contextError(ctx context.Context, op string) *Error {
	cerr := ctx.Err()
	if cerr == nil {
		return nil
	}
	code := CodeCanceled
	if errors.Is(cerr, context.DeadlineExceeded) {
		code = CodeDeadlineExceeded
	}
	return &Error{Op: op, Code: code, Message: cerr.Error(), Err: cerr}
}
