// Command modgraph is the module graph of bench/run.py's modproxy
// scenario: a small program that imports a few widely used libraries, so
// that `go mod download` and `go build` on a new runner fetch a real graph
// of well over a hundred modules. It is built, never run.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

func main() {
	logger := zap.NewExample()
	defer logger.Sync()
	cmd := &cobra.Command{
		Use: "modgraph",
		RunE: func(*cobra.Command, []string) error {
			v := viper.New()
			v.SetDefault("listen", "127.0.0.1:0")
			r := gin.New()
			_ = r
			_ = prometheus.NewCounter(prometheus.CounterOpts{Name: "modgraph_runs_total", Help: "runs"})
			_ = redis.NewClient(&redis.Options{Addr: v.GetString("listen")})
			_ = grpc.NewServer()
			_ = otel.Tracer("modgraph")
			_ = s3.New(s3.Options{Region: "us-east-1"})
			if _, err := pgx.ParseConfig("postgres://localhost/modgraph"); err != nil {
				return err
			}
			logger.Info("modgraph", zap.String("listen", v.GetString("listen")))
			return nil
		},
	}
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
