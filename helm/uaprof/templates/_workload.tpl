{{/*
What both tiers' workloads share: the Deployment, its HorizontalPodAutoscaler, its
PodDisruptionBudget and its metrics Service. Call with (dict "root" $ "tier" "notifier").
*/}}

{{- define "uaprof.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $tier := .tier -}}
{{- $t := get $v $tier -}}
{{- $name := printf "%s-%s" (include "uaprof.fullname" $root) $tier -}}
{{- $saslSecret := $v.kafka.sasl.passwordSecret -}}
{{- $withInit := and $v.kafka.enabled (ne (toString $saslSecret.name) "") -}}
{{- $hostNetwork := and (eq $tier "notifier") $t.hostNetwork -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "uaprof.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $tier }}
spec:
  {{- if not $t.autoscaling.enabled }}
  replicas: {{ $t.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if and (eq $tier "content") (not $v.kafka.enabled) }}
  # One node owns the document journal: never two at once, also not during a rollout.
  strategy:
    type: Recreate
  {{- else }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      {{- if $hostNetwork }}
      # One pod per node holds the node's SIP port: replace in place.
      maxUnavailable: 1
      maxSurge: 0
      {{- else }}
      maxUnavailable: 0
      maxSurge: 1
      {{- end }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "uaprof.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "uaprof.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $tier }}
      annotations:
        # Roll the pods when their configuration changes.
        checksum/config: {{ include "uaprof.config" . | sha256sum }}
        {{- with $t.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "uaprof.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $hostNetwork }}
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      {{- end }}
      {{- with $t.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      # SIGTERM drains within shutdown_grace; the margin covers the final snapshot and exit.
      terminationGracePeriodSeconds: {{ add $t.shutdownGraceSeconds $t.terminationMarginSeconds }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- with $t.topologySpread }}
      topologySpreadConstraints:
        {{- range . }}
        - {{ toYaml . | nindent 10 | trim }}
          labelSelector:
            matchLabels:
              {{- include "uaprof.selector" $ | nindent 14 }}
        {{- end }}
      {{- end }}
      {{- with $t.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $t.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $t.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $withInit }}
      initContainers:
        # Writes the pod's configuration: the ConfigMap's file plus the secret properties,
        # which belong to the [kafka.properties] table the file ends with.
        - name: config
          image: {{ $v.configInit.image }}
          imagePullPolicy: {{ $v.configInit.pullPolicy }}
          command:
            - /bin/sh
            - -c
            - |
              set -eu
              case "$KAFKA_SASL_PASSWORD" in
                *'
              '*) echo "the kafka sasl password contains a newline" >&2; exit 64 ;;
              esac
              esc=$(printf '%s' "$KAFKA_SASL_PASSWORD" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
              umask 077
              { cat "$CONFIG_TEMPLATE"; printf '"sasl.password" = "%s"\n' "$esc"; } > "$UAPROF_CONFIG"
          env:
            - name: CONFIG_TEMPLATE
              value: /etc/uaprof/template/{{ $tier }}.toml
            - name: UAPROF_CONFIG
              value: /etc/uaprof/run/uaprof.toml
            - name: KAFKA_SASL_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $saslSecret.name }}
                  key: {{ $saslSecret.key }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          resources:
            requests:
              cpu: 10m
              memory: 16Mi
            limits:
              memory: 32Mi
          volumeMounts:
            - name: config-template
              mountPath: /etc/uaprof/template
              readOnly: true
            - name: config
              mountPath: /etc/uaprof/run
      {{- end }}
      containers:
        - name: uaprof
          image: {{ include "uaprof.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          # The image's entrypoint is the uaprof binary.
          args:
            - --log={{ $v.log }}
          env:
            - name: UAPROF_CONFIG
              value: {{ ternary "/etc/uaprof/run/uaprof.toml" (printf "/etc/uaprof/template/%s.toml" $tier) $withInit }}
            {{- if $v.redis.auth.existingSecret }}
            - name: UAPROF_REDIS_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $v.redis.auth.existingSecret }}
                  key: {{ $v.redis.auth.passwordKey }}
            # The URLs with the credentials; Kubernetes expands $(UAPROF_REDIS_PASSWORD).
            {{- $cred := printf "${1}%s:$(UAPROF_REDIS_PASSWORD)@" $v.redis.auth.username }}
            {{- $urls := list }}
            {{- range $v.redis.urls }}
            {{- $urls = append $urls (regexReplaceAll "^(redis://)" . $cred) }}
            {{- end }}
            - name: UAPROF_REDIS
              value: {{ join "," $urls | quote }}
            {{- end }}
            {{- if and (eq $tier "notifier") (not $t.advertise) }}
            # Via and Contact of NOTIFYs carry the {{ ternary "node's" "pod's" $hostNetwork }} address.
            - name: UAPROF_ADVERTISE
              valueFrom:
                fieldRef:
                  fieldPath: {{ ternary "status.hostIP" "status.podIP" $hostNetwork }}
            {{- end }}
          ports:
            {{- if eq $tier "notifier" }}
            - name: sip-udp
              containerPort: {{ $t.ports.sip }}
              protocol: UDP
            - name: sip-tcp
              containerPort: {{ $t.ports.sip }}
              protocol: TCP
            {{- if $t.tls.existingSecret }}
            - name: sip-tls
              containerPort: {{ $t.ports.sipTls }}
              protocol: TCP
            {{- end }}
            {{- else }}
            - name: http
              containerPort: {{ $t.ports.http }}
              protocol: TCP
            {{- if dig "http3" "enabled" false $t }}
            - name: http3
              containerPort: {{ $t.ports.http }}
              protocol: UDP
            {{- end }}
            - name: provision
              containerPort: {{ $t.ports.provision }}
              protocol: TCP
            - name: grpc
              containerPort: {{ $t.ports.grpc }}
              protocol: TCP
            {{- end }}
            - name: admin
              containerPort: {{ $t.ports.admin }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /live
              port: admin
            {{- toYaml $t.probes.liveness | nindent 12 }}
          readinessProbe:
            # 503 while starting and while draining: the endpoint leaves the Services first.
            httpGet:
              path: /ready
              port: admin
            {{- toYaml $t.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml $t.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: {{ ternary "config" "config-template" $withInit }}
              mountPath: {{ ternary "/etc/uaprof/run" "/etc/uaprof/template" $withInit }}
              readOnly: true
            - name: data
              mountPath: /var/lib/uaprof
            {{- range $v.kafka.secretMounts }}
            - name: kafka-{{ . | replace "." "-" }}
              mountPath: /etc/uaprof/kafka/{{ . }}
              readOnly: true
            {{- end }}
            {{- if and (eq $tier "content") $t.tls.existingSecret }}
            - name: tls
              mountPath: /etc/uaprof/tls
              readOnly: true
            {{- end }}
            {{- if and (eq $tier "notifier") $t.tls.existingSecret }}
            - name: sip-tls
              mountPath: /etc/uaprof/sip-tls
              readOnly: true
            {{- end }}
            {{- if and (eq $tier "notifier") $t.digest.existingSecret }}
            - name: sip-digest
              mountPath: /etc/uaprof/sip-digest
              readOnly: true
            {{- end }}
            {{- if and (eq $tier "content") $t.tls.clientCaSecret }}
            - name: client-ca
              mountPath: /etc/uaprof/client-ca
              readOnly: true
            {{- end }}
            {{- if and (eq $tier "content") $t.urlSigning.existingSecret }}
            - name: url-signing
              mountPath: /etc/uaprof/url-signing
              readOnly: true
            {{- end }}
            {{- if dig "fetchAuth" "clientCaSecret" "" $t }}
            - name: phone-ca
              mountPath: /etc/uaprof/phone-ca
              readOnly: true
            {{- end }}
            {{- if dig "fetchAuth" "digest" "existingSecret" "" $t }}
            - name: fetch-digest
              mountPath: /etc/uaprof/fetch-digest
              readOnly: true
            {{- end }}
      volumes:
        - name: config-template
          configMap:
            name: {{ include "uaprof.fullname" $root }}-config
            items:
              - key: {{ $tier }}.toml
                path: {{ $tier }}.toml
        {{- if $withInit }}
        - name: config
          emptyDir:
            medium: Memory
            sizeLimit: 1Mi
        {{- end }}
        - name: data
          {{- if and (eq $tier "content") $t.persistence.existingClaim }}
          persistentVolumeClaim:
            claimName: {{ $t.persistence.existingClaim }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        {{- range $v.kafka.secretMounts }}
        - name: kafka-{{ . | replace "." "-" }}
          secret:
            secretName: {{ . }}
        {{- end }}
        {{- if $t.tls.existingSecret }}
        - name: {{ ternary "sip-tls" "tls" (eq $tier "notifier") }}
          secret:
            secretName: {{ $t.tls.existingSecret }}
        {{- end }}
        {{- if and (eq $tier "notifier") $t.digest.existingSecret }}
        - name: sip-digest
          secret:
            secretName: {{ $t.digest.existingSecret }}
        {{- end }}
        {{- if and (eq $tier "content") $t.tls.clientCaSecret }}
        - name: client-ca
          secret:
            secretName: {{ $t.tls.clientCaSecret }}
        {{- end }}
        {{- if and (eq $tier "content") $t.urlSigning.existingSecret }}
        - name: url-signing
          secret:
            secretName: {{ $t.urlSigning.existingSecret }}
        {{- end }}
        {{- with dig "fetchAuth" "clientCaSecret" "" $t }}
        - name: phone-ca
          secret:
            secretName: {{ . }}
        {{- end }}
        {{- with dig "fetchAuth" "digest" "existingSecret" "" $t }}
        - name: fetch-digest
          secret:
            secretName: {{ . }}
        {{- end }}
{{- end -}}

{{- define "uaprof.autoscaling" -}}
{{- $t := get .root.Values .tier -}}
{{- if $t.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "uaprof.fullname" .root }}-{{ .tier }}
  labels:
    {{- include "uaprof.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .tier }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "uaprof.fullname" .root }}-{{ .tier }}
  minReplicas: {{ $t.autoscaling.minReplicas }}
  maxReplicas: {{ $t.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $t.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    # A power-up storm is over in minutes; do not drop capacity in the middle of one.
    scaleDown:
      stabilizationWindowSeconds: 600
{{- end }}
{{- if $t.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "uaprof.fullname" .root }}-{{ .tier }}
  labels:
    {{- include "uaprof.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .tier }}
spec:
  maxUnavailable: {{ $t.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "uaprof.selector" . | nindent 6 }}
{{- end }}
---
# /metrics of every pod of the tier, for the ServiceMonitor (not for clients).
apiVersion: v1
kind: Service
metadata:
  name: {{ include "uaprof.fullname" .root }}-{{ .tier }}-metrics
  labels:
    {{- include "uaprof.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .tier }}
    uaprof.io/metrics: "true"
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    {{- include "uaprof.selector" . | nindent 4 }}
  ports:
    - name: admin
      port: {{ $t.ports.admin }}
      targetPort: admin
      protocol: TCP
{{- end -}}
