package httpface

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/condaccess/condaccess/internal/auth"
)

// HoldCallFunc takes the in-flight call slot of an authenticated caller's request
// before its body is read, or refuses it (server.Server.HoldCall).
type HoldCallFunc func(ctx context.Context, id auth.Identity, remote string) (context.Context, func(), error)

// holdCalls applies the per-identity cap on calls in flight to the RPC and REST
// requests of authenticated callers before the transcoder buffers their bodies: the
// chain applies it too, but only once a whole request message has been buffered, and
// the HTTP server itself does not bound how many requests are being read. A request
// that holds a slot is not counted again by the chain. Streaming RPCs are not counted
// (as on the gRPC listener), REST streams included: restStreams has turned them into
// Connect calls of their streaming RPC before they get here. Callers without an identity
// pass (guard already bounded what they may send), but for their open unary calls, which
// take a slot of the stranger pool (server.Server.HoldCall with no identity).
func holdCalls(hold HoldCallFunc, next http.Handler) http.Handler {
	if hold == nil {
		return next
	}
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rpc := strings.HasPrefix(r.URL.Path, "/"+servicePrefix) && !streamingRPCs()[r.URL.Path]
		rest := strings.HasPrefix(r.URL.Path, "/v1/")
		id, ok := identityOf(r)
		if !ok && r.TLS != nil && openUnary()[r.URL.Path] {
			// A caller without an identity (outside development mode, which has no
			// TLS): its open unary calls (the end user's GetBlockedStatus) take a slot
			// of the stranger pool, per client host, so that one host cannot make the
			// transcoder buffer any number of bodies.
			id, ok = auth.Identity{}, true
		} else if !ok || (!rpc && !rest) {
			next.ServeHTTP(w, r)
			return
		}
		ctx, release, err := hold(r.Context(), id, r.RemoteAddr)
		if err != nil {
			writeRefusal(w, r, errw, err, rest)
			return
		}
		defer release()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// openUnary are the RPC and REST paths of the unary methods a caller without an
// identity may call through the HTTP face (httpOpenMethods that are not streams).
var openUnary = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				full := "/" + string(sd.FullName()) + "/" + string(md.Name())
				if !httpOpenMethods[full] || md.IsStreamingServer() || md.IsStreamingClient() {
					continue
				}
				out[full] = true
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				if p := rule.GetGet() + rule.GetPost() + rule.GetPatch() + rule.GetPut() + rule.GetDelete(); p != "" {
					out[p] = true
				}
			}
		}
		return true
	})
	return out
})

// streamingRPCs are the RPC paths of the registered streaming methods (watches, the
// console's feeds): they are not calls in flight, as on the gRPC listener.
var streamingRPCs = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				if md := sd.Methods().Get(j); md.IsStreamingServer() || md.IsStreamingClient() {
					out["/"+string(sd.FullName())+"/"+string(md.Name())] = true
				}
			}
		}
		return true
	})
	return out
})

// identityOf is the caller's identity as the chain will read it: the one in the
// context (auth.HTTPIdentity, a console session), else the verified certificate's.
func identityOf(r *http.Request) (auth.Identity, bool) {
	if id, ok := auth.FromContext(r.Context()); ok && id.Subject != "" {
		return id, true
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		id := auth.IdentityFromCert(r.TLS.VerifiedChains[0][0])
		return id, id.Kind != auth.KindUnknown && id.Subject != ""
	}
	return auth.Identity{}, false
}

// writeRefusal answers with err (a gRPC status): a Connect error with its details, a
// google.rpc.Status JSON body for REST, 429 with Retry-After otherwise.
func writeRefusal(w http.ResponseWriter, r *http.Request, errw *connect.ErrorWriter, err error, rest bool) {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds()))))
		}
	}
	if rest {
		b, _ := protojson.Marshal(st.Proto())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write(b)
		return
	}
	if errw.IsSupported(r) {
		cerr := connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
		for _, d := range st.Details() {
			if m, ok := d.(proto.Message); ok {
				if cd, derr := connect.NewErrorDetail(m); derr == nil {
					cerr.AddDetail(cd)
				}
			}
		}
		_ = errw.Write(w, r, cerr)
		return
	}
	http.Error(w, st.Message(), http.StatusTooManyRequests)
}
