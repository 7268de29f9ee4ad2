;;; gastownd.el --- Gas Town event feed, sessions and attribution  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The gastownd authors

;; Author: The gastownd authors
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: tools, processes
;; SPDX-License-Identifier: MIT

;; This file is not part of GNU Emacs.

;;; Commentary:

;; gastownd owns the event log and the agent sessions of a Gas Town
;; workspace (a "town").  This package talks to it over its Unix socket
;; (newline-delimited JSON) without ever blocking Emacs: every connection
;; is asynchronous and every request has a timeout.
;;
;;   M-x gastownd-feed       the live event feed in *gastownd-feed*
;;   M-x gastownd-sessions   the sessions; RET: the session, s: seance,
;;                           f, a, L: filters, g: refresh
;;   M-x gastownd-digest     a session by id, in *gastownd-digest*
;;   M-x gastownd-who        who closed, created or updated the issue at point
;;   M-x gastownd-mode-line-mode   "gastownd: 2 open" or "gastownd: down"
;;
;; In every buffer of the package, ? lists the keys, and RET on an issue
;; id shows who touched it.
;;
;; The socket path comes from `gastownctl sockname' (see
;; `gastownd-gastownctl-command'), run once per town.  The town is the one
;; around the buffer's directory, else GT_TOWN_ROOT, else gastownctl's
;; default.  See docs/editors.md in the gastownd repository.

;;; Code:

(require 'cl-lib)
(require 'parse-time)
(require 'subr-x)
(require 'tabulated-list)

(declare-function term-mode "term" ())
(declare-function term-char-mode "term" ())

(defgroup gastownd nil
  "Gas Town's event feed, sessions and attribution from gastownd."
  :group 'tools
  :prefix "gastownd-")

(defcustom gastownd-gastownctl-command '("gastownctl")
  "The gastownctl command, as a program and its first arguments.
It prints the daemon's socket path (`gastownctl sockname') and runs seances."
  :type '(repeat string))

(defcustom gastownd-socket nil
  "The daemon's socket path; nil to ask `gastownctl sockname'."
  :type '(choice (const :tag "Ask gastownctl" nil) file))

(defcustom gastownd-town-root nil
  "The town to use; nil for the town around the buffer's directory.
Outside any town, gastownctl decides: GT_TOWN_ROOT, GT_ROOT, then ~/gt."
  :type '(choice (const :tag "From the buffer" nil) directory))

(defcustom gastownd-timeout 3.0
  "Seconds after which a request to the daemon gives up."
  :type 'number)

(defcustom gastownd-feed-lines 500
  "Lines kept in the feed buffer; the oldest go first."
  :type 'natnum)

(defcustom gastownd-reconnect-min 0.25
  "Seconds before the feed's first reconnection attempt.
The delay doubles after each failed attempt, up to `gastownd-reconnect-max'."
  :type 'number)

(defcustom gastownd-reconnect-max 5.0
  "Longest delay, in seconds, between the feed's reconnection attempts."
  :type 'number)

(defcustom gastownd-sessions-limit 200
  "Rows fetched by `gastownd-sessions'."
  :type 'natnum)

(defcustom gastownd-mode-line-interval 5.0
  "Seconds between two refreshes of `gastownd-mode-line-mode'."
  :type 'number)

(defcustom gastownd-time-format "%H:%M:%S"
  "Local time format of feed rows (see `format-time-string')."
  :type 'string)

(defcustom gastownd-date-format "%Y-%m-%d %H:%M"
  "Local time format of session and attribution rows."
  :type 'string)

(defcustom gastownd-day-time-format "%m-%d %H:%M"
  "Local time format of feed rows from another day than today."
  :type 'string)

(defface gastownd-time '((t :inherit font-lock-comment-face))
  "Times in gastownd buffers.")

(defface gastownd-type '((t :inherit font-lock-type-face))
  "Event types, and the actions of the who buffer.")

(defface gastownd-actor '((t :inherit font-lock-variable-name-face))
  "Actors.")

(defface gastownd-node '((t :inherit font-lock-constant-face))
  "The node of another machine's event or session (actor@node).")

(defface gastownd-id '((t :inherit font-lock-constant-face))
  "Short session ids.")

(defface gastownd-status '((t :inherit font-lock-warning-face))
  "The feed's own `--' lines: the daemon went away, came back, a resync.")

(defface gastownd-state-open '((t :inherit font-lock-string-face))
  "The state of an open session.")

(defface gastownd-state-squashed '((t :inherit font-lock-keyword-face))
  "The state of a session ended and squashed into a digest.")

(defface gastownd-state-abandoned '((t :inherit font-lock-warning-face))
  "The state of an abandoned session.")

(defface gastownd-state-logged '((t :inherit font-lock-comment-face))
  "The state of a session known only from the log's lines.")

(defconst gastownd-protocol 1
  "The version of the gastownd protocol this package speaks.")

;;;; Messages

(defun gastownd--notify (format-string &rest args)
  "Tell the user, on one line, what FORMAT-STRING and ARGS say."
  (message "gastownd: %s" (apply #'format format-string args)))

(defun gastownd--describe (op err)
  "A one-line description of ERR, the failure of the request OP."
  (let ((code (or (plist-get err :code) "error"))
        (text (or (plist-get err :message) "no message")))
    (if (member code '("unavailable" "timeout" "gastownctl"))
        text
      (format "%s failed (%s): %s" op code text))))

(defmacro gastownd--safely (&rest body)
  "Run BODY; report an error on one line instead of letting it escape."
  (declare (indent 0) (debug t))
  `(condition-case err
       (progn ,@body)
     (error (gastownd--notify "internal error: %s"
                              (error-message-string err)))))

;;;; Towns and sockets

(defvar-local gastownd--buffer-town nil
  "The town a gastownd buffer was opened for: a directory, or `default'.")

(defun gastownd--find-root (dir)
  "The outermost ancestor of DIR holding mayor/town.json.
Else the outermost one holding a mayor/ directory, else nil (as gt decides)."
  (let ((dir (directory-file-name (expand-file-name dir)))
        with-marker with-mayor)
    (while dir
      (cond ((file-regular-p (expand-file-name "mayor/town.json" dir))
             (setq with-marker dir))
            ((file-directory-p (expand-file-name "mayor" dir))
             (setq with-mayor dir)))
      (let ((parent (directory-file-name (file-name-directory dir))))
        (setq dir (unless (equal parent dir) parent))))
    (or with-marker with-mayor)))

(defun gastownd--town-root ()
  "The current buffer's town, or nil for gastownctl's default."
  (cond (gastownd-town-root
         (directory-file-name (expand-file-name gastownd-town-root)))
        (gastownd--buffer-town
         (unless (eq gastownd--buffer-town 'default) gastownd--buffer-town))
        ((and default-directory (not (file-remote-p default-directory)))
         (gastownd--find-root default-directory))))

(defvar gastownd--sockets (make-hash-table :test #'equal)
  "Socket paths found so far, by town (\"\" for the default).")

(defvar gastownd--socket-waiters (make-hash-table :test #'equal)
  "Callbacks waiting for a running `gastownctl sockname', by town.")

(defun gastownd-forget-sockets ()
  "Forget the socket paths found so far.
Needed after changing `gastownd-gastownctl-command' or the environment."
  (interactive)
  (clrhash gastownd--sockets))

(defun gastownd--socket-found (key path err)
  "Give PATH (or ERR) to everything waiting for the socket of town KEY."
  (let ((callbacks (reverse (gethash key gastownd--socket-waiters))))
    (remhash key gastownd--socket-waiters)
    (when path (puthash key path gastownd--sockets))
    (dolist (callback callbacks)
      (gastownd--safely (funcall callback path err)))))

(defun gastownd--socket (root callback)
  "Call CALLBACK with the socket path of ROOT's daemon and nil.
Or with nil and an error plist, when gastownctl fails."
  (let* ((key (or root ""))
         (known (gethash key gastownd--sockets)))
    (cond (gastownd-socket
           (funcall callback (expand-file-name gastownd-socket) nil))
          (known (funcall callback known nil))
          ((gethash key gastownd--socket-waiters)
           (push callback (gethash key gastownd--socket-waiters)))
          (t (puthash key (list callback) gastownd--socket-waiters)
             (gastownd--run-sockname root key)))))

(defun gastownd--local-directory ()
  "A local directory that exists, for running processes from."
  (if (and default-directory (not (file-remote-p default-directory))
           (file-directory-p default-directory))
      default-directory
    (expand-file-name "~/")))

(defun gastownd--sockname-error (format-string &rest args)
  "An error plist of `gastownctl sockname', saying FORMAT-STRING with ARGS."
  (list :code "gastownctl" :message (apply #'format format-string args)))

(defun gastownd--run-sockname (root key)
  "Run `gastownctl sockname' for ROOT, asynchronously, for the waiters of KEY."
  (let* ((command (append gastownd-gastownctl-command
                          (when root (list "--town-root" root))
                          '("sockname")))
         (shown (string-join command " "))
         (output (generate-new-buffer " *gastownd-sockname*"))
         (default-directory (gastownd--local-directory))
         (done nil)
         timer process)
    (cl-flet ((finish (path err)
                (unless done
                  (setq done t)
                  (when timer (cancel-timer timer))
                  (when (and process (process-live-p process))
                    (delete-process process))
                  (when (buffer-live-p output) (kill-buffer output))
                  (gastownd--socket-found key path err))))
      (condition-case err
          (setq process
                (make-process
                 :name "gastownd-sockname" :buffer output
                 :command (cons (or (executable-find (car command))
                                    (error "%s: not found" (car command)))
                                (cdr command))
                 :connection-type 'pipe :noquery t
                 :sentinel
                 (lambda (proc _event)
                   (unless (process-live-p proc)
                     (let ((text (with-current-buffer output
                                   (string-trim (buffer-string))))
                           (status (process-exit-status proc)))
                       (if (and (eq (process-status proc) 'exit) (= status 0)
                                (not (string-empty-p text))
                                (not (string-search "\n" text)))
                           (finish text nil)
                         (finish nil (gastownd--sockname-error
                                      "`%s' failed (exit %s): %s" shown status
                                      (car (split-string text "\n"))))))))))
        (error
         (finish nil (gastownd--sockname-error
                      "cannot run `%s' (%s); set `gastownd-gastownctl-command'"
                      shown (error-message-string err)))))
      (unless done
        (setq timer
              (run-at-time gastownd-timeout nil
                           (lambda ()
                             (finish nil (gastownd--sockname-error
                                          "`%s' did not finish within %s s"
                                          shown gastownd-timeout)))))))))

;;;; Connections

(defun gastownd--plain (value)
  "VALUE, decoded JSON, as the package reads it: null and false are nil.
Arrays become lists.  A `payload' is the user's data, shown as JSON: it
stays as decoded (arrays as vectors, null as :null, false as :false), so
that `gastownd--short' prints it as the CLI does."
  (cond ((memq value '(:null :false)) nil)
        ((vectorp value) (mapcar #'gastownd--plain value))
        ((consp value)
         (mapcar (lambda (pair)
                   (cons (car pair)
                         (if (eq (car pair) 'payload)
                             (cdr pair)
                           (gastownd--plain (cdr pair)))))
                 value))
        (t value)))

(defun gastownd--decode (line)
  "LINE as an alist, or nil if it is not a JSON object.
See `gastownd--plain' for how its values are read."
  (condition-case nil
      (let ((value (json-parse-string line :object-type 'alist
                                      :array-type 'array
                                      :null-object :null :false-object :false)))
        (and (consp value) (gastownd--plain value)))
    (error nil)))

(defun gastownd--error-plist (object)
  "The error OBJECT of a reply (an alist) as (:code CODE :message MESSAGE)."
  (list :code (or (alist-get 'code object) "error")
        :message (or (alist-get 'message object) "no message")))

(defconst gastownd--not-running-regexp
  (regexp-opt '("No such file" "refused" "code 2\n" "code 111\n"))
  "What a failed connection says when nothing listens on the socket.")

(defun gastownd--connect-error (path err)
  "A one-line error for a failed connection to PATH.
ERR is the error signaled, or the sentinel's event string."
  (let ((text (if (stringp err) err (error-message-string err))))
    (list :code "unavailable"
          :message
          (if (string-match-p gastownd--not-running-regexp text)
              (format "the daemon is not running (nothing listens on %s)" path)
            (format "cannot connect to %s: %s" path (string-trim text))))))

(defun gastownd--open (path on-frame on-close)
  "Connect to the socket PATH; return the process, or nil.
ON-FRAME gets each frame received, decoded.  ON-CLOSE gets an error plist
once, when the connection fails or ends, unless it was closed with
`gastownd--close'.  Neither runs before this function returns."
  (condition-case err
      (let ((process (make-network-process
                      :name "gastownd" :family 'local :service path
                      :nowait t :noquery t :coding 'utf-8-unix
                      :filter #'gastownd--filter
                      :sentinel #'gastownd--sentinel)))
        (process-put process 'gastownd-path path)
        (process-put process 'gastownd-on-frame on-frame)
        (process-put process 'gastownd-on-close on-close)
        (process-put process 'gastownd-partial "")
        (if (memq (process-status process) '(connect open))
            process
          ;; With :nowait, a connection refused at once leaves the process
          ;; in a `file-error' (or `file-missing') status, and no sentinel runs.
          (gastownd--open-failed (gastownd--status-error path process)
                                 on-close)))
    (error
     (gastownd--open-failed (gastownd--connect-error path err) on-close))))

(defun gastownd--status-error (path process)
  "The error plist of PROCESS, which could not connect to PATH at once."
  (let ((status (process-status process)))
    (gastownd--close process)
    (if (or (eq status 'file-missing) (file-writable-p path))
        (list :code "unavailable"
              :message
              (format "the daemon is not running (nothing listens on %s)" path))
      (list :code "unavailable"
            :message (format "cannot connect to %s (%s)" path status)))))

(defun gastownd--open-failed (failure on-close)
  "Report FAILURE, a connection that failed, to ON-CLOSE later; return nil."
  (run-at-time 0 nil (lambda () (gastownd--safely (funcall on-close failure))))
  nil)

(defun gastownd--close (process)
  "Close PROCESS from our side: nothing more is delivered from it."
  (when process
    (process-put process 'gastownd-dropped t)
    (when (process-live-p process) (delete-process process))))

(defun gastownd--fail (process err)
  "PROCESS ended with ERR: tell its owner, once."
  (unless (process-get process 'gastownd-dropped)
    (gastownd--close process)
    (let ((on-close (process-get process 'gastownd-on-close)))
      (gastownd--safely (funcall on-close err)))))

(defun gastownd--send (process message)
  "Send MESSAGE (a plist) on PROCESS, now or once it is connected."
  (unless (process-get process 'gastownd-dropped)
    (let ((data (concat (json-serialize message) "\n")))
      (if (eq (process-status process) 'open)
          (process-send-string process data)
        (process-put process 'gastownd-outbox
                     (append (process-get process 'gastownd-outbox)
                             (list data)))))))

(defun gastownd--sentinel (process event)
  "React to EVENT on PROCESS: connected, failed or closed."
  (let ((path (process-get process 'gastownd-path)))
    (cond ((process-get process 'gastownd-dropped))
          ((eq (process-status process) 'open)
           (let ((outbox (process-get process 'gastownd-outbox)))
             (process-put process 'gastownd-outbox nil)
             (condition-case err
                 (dolist (data outbox) (process-send-string process data))
               (error (gastownd--fail process
                                      (gastownd--connect-error path err))))))
          ((string-prefix-p "failed" event)
           (gastownd--fail process (gastownd--connect-error path event)))
          (t
           (gastownd--fail
            process (list :code "unavailable"
                          :message "the daemon closed the connection"))))))

(defun gastownd--filter (process chunk)
  "Split CHUNK, received on PROCESS, into frames and hand them over."
  (let* ((data (concat (process-get process 'gastownd-partial) chunk))
         (lines (split-string data "\n"))
         (on-frame (process-get process 'gastownd-on-frame)))
    (process-put process 'gastownd-partial (car (last lines)))
    (dolist (line (butlast lines))
      (unless (or (process-get process 'gastownd-dropped)
                  (string-empty-p line))
        (let ((frame (gastownd--decode line)))
          (when frame
            (gastownd--safely (funcall on-frame frame))))))))

(defun gastownd--hello ()
  "The hello request that opens every connection."
  (list :op "hello" :id 0 :protocol gastownd-protocol :client "gastownd.el"))

(defun gastownd--request (root op fields callback &optional timeout)
  "Send OP with FIELDS (a plist) to the daemon of ROOT.
Call CALLBACK once with the result (an alist) and nil, or with nil and an
error plist, within TIMEOUT seconds (default `gastownd-timeout') whatever
the daemon does."
  (let ((finished nil) (process nil) (timer nil)
        (limit (or timeout gastownd-timeout)))
    (cl-flet ((finish (result err)
                (unless finished
                  (setq finished t)
                  (when timer (cancel-timer timer))
                  (gastownd--close process)
                  (gastownd--safely (funcall callback result err)))))
      (setq timer
            (run-at-time
             limit nil
             (lambda ()
               (finish nil (list :code "timeout"
                                 :message
                                 (format
                                  "the daemon did not answer `%s' within %.1f s"
                                  op limit))))))
      (gastownd--socket
       root
       (lambda (path err)
         (cond
          (finished)
          (err (finish nil err))
          ((setq process (gastownd--open
                          path
                          (lambda (frame)
                            (cond ((alist-get 'push frame))
                                  ((and (eql (alist-get 'id frame) 1)
                                        (alist-get 'ok frame))
                                   (finish (alist-get 'result frame) nil))
                                  ((not (alist-get 'ok frame))
                                   ;; Ours, the hello's, or a connection-level
                                   ;; error (busy, forbidden).
                                   (finish nil (gastownd--error-plist
                                                (alist-get 'error frame))))))
                          (lambda (close-error) (finish nil close-error))))
           (gastownd--send process (gastownd--hello))
           (gastownd--send process (append (list :op op :id 1) fields)))))))))

;;;; Text

(defun gastownd--local-time (ts format-string)
  "The timestamp TS in local time, with FORMAT-STRING.
TS itself when it does not parse."
  (or (and (stringp ts)
           (ignore-errors
             (format-time-string format-string
                                 (parse-iso8601-time-string ts))))
      (format "%s" (or ts "?"))))

(defun gastownd--json (value)
  "VALUE, a decoded payload value, as compact JSON (as `gastownctl' prints it)."
  (condition-case nil
      (json-serialize value :null-object :null :false-object :false)
    (error (format "%S" value))))

(defun gastownd--short (value &optional limit)
  "VALUE on one line of at most LIMIT characters (default 60).
Strings as they are, other values as JSON."
  (let* ((limit (or limit 60))
         (text (if (stringp value) value (gastownd--json value)))
         (text (replace-regexp-in-string "\r?\n" "⏎" text)))
    (if (> (length text) limit)
        (concat (substring text 0 (1- limit)) "…")
      text)))

(defun gastownd--summary (payload &optional actor)
  "PAYLOAD (an alist) as key=value pairs, keys sorted.
Without what the line already says (ACTOR is the line's actor): a `role'
equal to the actor, an `actor_pid' of ACTOR-PID (shown as pid=PID), and
session ids cut to 8 characters."
  (mapconcat
   #'identity
   (delq nil
         (mapcar
          (lambda (pair)
            (let ((key (symbol-name (car pair)))
                  (value (cdr pair)))
              (cond
               ((and (equal key "role") actor (equal value actor))
                (setq value 'skip))
               ((and (equal key "actor_pid") actor (stringp value)
                     (string-match (concat "\\`" (regexp-quote actor)
                                           "-\\([0-9]+\\)\\'")
                                   value))
                (setq key "pid" value (match-string 1 value)))
               ((and (equal key "session_id") (stringp value)
                     (string-match-p "\\`[0-9a-f]+-[0-9a-f]+-" value))
                (setq value (gastownd--short-id value))))
              (unless (eq value 'skip)
                (format "%s=%s" key (gastownd--short value)))))
          (sort (copy-sequence (and (consp payload) payload))
                (lambda (a b)
                  (string< (symbol-name (car a)) (symbol-name (car b)))))))
   " "))

(defun gastownd--pad (text width)
  "TEXT padded with spaces to WIDTH columns."
  (let ((text (format "%s" (or text ""))))
    (concat text (make-string (max 0 (- width (string-width text))) ?\s))))

(defun gastownd--who (actor node)
  "ACTOR, with @NODE when the record came from another machine."
  (if (and node (not (string-empty-p node)))
      (format "%s@%s" (or actor "") node)
    (or actor "")))

(defun gastownd--remote-node (record)
  "The node of RECORD (a session, digest or attribution), if another one.
Nil when RECORD comes from the node that answered."
  (and (eq (alist-get 'remote record) t) (alist-get 'node record)))

(defun gastownd--columns (&rest columns)
  "COLUMNS joined by two spaces, without trailing blanks."
  (string-trim-right (string-join columns "  ")))

(defun gastownd--face (text face)
  "TEXT with FACE (as `font-lock-face', which font-lock leaves alone)."
  (propertize (format "%s" (or text "")) 'font-lock-face face))

(defun gastownd--feed-time (ts)
  "TS for a feed line: `gastownd-time-format' today, else with the date."
  (let ((time (and (stringp ts) (ignore-errors (parse-iso8601-time-string ts)))))
    (cond ((null time) (format "%s" (or ts "?")))
          ((equal (format-time-string "%F" time) (format-time-string "%F"))
           (format-time-string gastownd-time-format time))
          (t (format-time-string gastownd-day-time-format time)))))

(defun gastownd--time-width ()
  "The width of the feed's time column."
  (max (length (format-time-string gastownd-time-format 0))
       (length (format-time-string gastownd-day-time-format 0))))

(defun gastownd--event-line (event &optional node local-node)
  "EVENT (an alist) as `time  type  actor  summary'.
NODE, or the event's own node, names the machine it came from, shown as
actor@node unless it is LOCAL-NODE (the answering daemon's own)."
  (let* ((node (or node (alist-get 'node event)))
         (node (unless (equal node local-node) node))
         (actor (alist-get 'actor event))
         (who (concat (gastownd--face actor 'gastownd-actor)
                      (if (and node (not (string-empty-p node)))
                          (gastownd--face (concat "@" node) 'gastownd-node)
                        ""))))
    (propertize
     (gastownd--columns
      (gastownd--pad (gastownd--face (gastownd--feed-time (alist-get 'ts event))
                                     'gastownd-time)
                     (gastownd--time-width))
      (gastownd--pad (gastownd--face (or (alist-get 'type event) "?")
                                     'gastownd-type)
                     14)
      (gastownd--pad who 24)
      (gastownd--summary (alist-get 'payload event) actor))
     'gastownd-event event)))

(defun gastownd--marker (text)
  "A line of the feed's own (a reconnection, a resync) saying TEXT."
  (gastownd--face (format "-- %s  %s" (format-time-string gastownd-time-format)
                          text)
                  'gastownd-status))

(defun gastownd--short-id (id)
  "The first 8 characters of the session ID."
  (truncate-string-to-width (or id "?") 8))

(defun gastownd--widest (records key least)
  "The widest `string-width' of KEY over RECORDS, at least LEAST."
  (apply #'max least (mapcar (lambda (record)
                               (string-width (or (funcall key record) "")))
                             records)))

(defun gastownd--attribution-lines (issue records)
  "The lines of the who buffer: ISSUE, then one line per record of RECORDS.
The columns are aligned; each line holds its record (`gastownd-record')."
  (if (null records)
      (list (format "no session is recorded as touching %s" issue))
    (let ((action-width (gastownd--widest
                         records (lambda (r) (alist-get 'action r)) 7))
          (actor-width (gastownd--widest
                        records
                        (lambda (r) (gastownd--who (alist-get 'actor r)
                                                   (gastownd--remote-node r)))
                        1)))
      (cons (format "%s: %d change%s" issue (length records)
                    (if (= (length records) 1) "" "s"))
            (mapcar
             (lambda (record)
               (let ((digest (alist-get 'digest_id record)))
                 (propertize
                  (gastownd--columns
                   (gastownd--pad (gastownd--face (or (alist-get 'action record) "?")
                                                  'gastownd-type)
                                  action-width)
                   (gastownd--face (gastownd--local-time (alist-get 'at record)
                                                         gastownd-date-format)
                                   'gastownd-time)
                   (gastownd--face (gastownd--short-id
                                    (alist-get 'session_id record))
                                   'gastownd-id)
                   (gastownd--pad (gastownd--face
                                   (gastownd--who (alist-get 'actor record)
                                                  (gastownd--remote-node record))
                                   'gastownd-actor)
                                  actor-width)
                   (if digest (concat "digest " digest) "(session open)"))
                  'gastownd-record record)))
             records)))))

(defun gastownd--issue-at-point ()
  "The Beads id at point (gt-a1b2, spotter-dov.3, hq-cv-4k3kg), or nil."
  (save-excursion
    (let ((case-fold-search nil)
          (chars "A-Za-z0-9.-"))
      (skip-chars-backward chars)
      (let* ((start (point))
             (end (progn (skip-chars-forward chars) (point)))
             (word (replace-regexp-in-string
                    "\\`[.-]+\\|[.-]+\\'" ""
                    (buffer-substring-no-properties start end))))
        (when (string-match-p "\\`[a-z][a-z0-9]*-[a-z0-9][a-z0-9.-]*\\'" word)
          word)))))

;;;; Event types

(defconst gastownd-known-types
  '("boot" "done" "escalation_acked" "escalation_closed" "escalation_sent"
    "halt" "handoff" "hook" "mail" "mass_death" "merge_failed"
    "merge_skipped" "merge_started" "merged" "nudge" "patrol_complete"
    "patrol_started" "polecat_checked" "polecat_nudged"
    "scheduler_close_retry" "scheduler_dispatch" "scheduler_dispatch_failed"
    "scheduler_enqueue" "session_death" "session_end" "session_start" "sling"
    "spawn" "unhook")
  "Gas Town's and gastownd's event types (the set is open: see below).")

(defvar gastownd--seen-types nil
  "Event types shown in a feed so far; they are known from then on.")

(defun gastownd--saw-type (type)
  "Remember TYPE, the type of an event shown."
  (when (and (stringp type) (not (member type gastownd--seen-types)))
    (push type gastownd--seen-types)))

(defun gastownd--known-types ()
  "The known event types, sorted: `gastownd-known-types' and those seen.
The set of types is open (`gt activity emit' takes any), so a type is
known once a feed has shown one of its events."
  (sort (delete-dups (append gastownd-known-types gastownd--seen-types nil))
        #'string<))

(defun gastownd--parse-types (types)
  "The event types named by TYPES, a list of strings, or an error string.
Each string may hold several types separated by commas or spaces:
\"sling done\", \"sling,done\" and \"sling, done\" are the same."
  (let ((known (gastownd--known-types))
        found unknown)
    (dolist (name (split-string (string-join types " ") "[ ,]+" t))
      (cond ((not (member name known)) (push name unknown))
            ((not (member name found)) (push name found))))
    (if unknown
        (format "unknown event type%s %s (known: %s)"
                (if (cdr unknown) "s" "")
                (string-join (nreverse unknown) ", ")
                (string-join known ", "))
      (nreverse found))))

(defun gastownd--read-types ()
  "Ask for event types, with completion; separated by commas."
  (completing-read-multiple "Event types (blank for all): "
                            (gastownd--known-types)))

;;;; The feed

(cl-defstruct (gastownd--feed (:constructor gastownd--feed-create))
  "A running feed: its buffer, filter, last cursor shown and connection."
  buffer root types all-nodes cursor fresh process (generation 0) delay down
  ever-up retry-timer reply-timer local-node local-node-known placeholder)

(defvar gastownd--the-feed nil
  "The running feed (there is one feed buffer).")

(defconst gastownd-feed-buffer-name "*gastownd-feed*"
  "The name of the feed buffer.")

(defconst gastownd-feed-waiting "-- waiting for the daemon…"
  "The feed's line until the daemon answers.")

(defconst gastownd-feed-empty "-- no events yet: new ones appear here"
  "The feed's line when the log has no event to show.")

(defvar gastownd-feed-mode-map
  (let ((map (make-sparse-keymap)))
    (set-keymap-parent map special-mode-map)
    (define-key map (kbd "RET") #'gastownd-feed-enter)
    map)
  "Keymap of `gastownd-feed-mode'.")

(define-derived-mode gastownd-feed-mode special-mode "gastownd-feed"
  "The live event feed of a town: one line per event, newest at the bottom.
\\<gastownd-feed-mode-map>\\[gastownd-feed-enter] on an issue id shows
who touched it; elsewhere on a line, it opens the line's session.
\\[revert-buffer] reads the latest events again.

\\{gastownd-feed-mode-map}"
  (setq-local revert-buffer-function #'gastownd--feed-revert)
  (setq-local truncate-lines t)
  (add-hook 'kill-buffer-hook #'gastownd--feed-killed nil t))

(defun gastownd--feed-mode-name (types all-nodes)
  "The feed's mode name, which shows its filter: TYPES and ALL-NODES."
  (concat "gastownd-feed"
          (when (or types all-nodes)
            (format "[%s]"
                    (string-join (append types
                                         (when all-nodes '("all-nodes")))
                                 " ")))))

(defun gastownd-feed-enter ()
  "On an issue id, show who touched it; elsewhere, the line's session."
  (interactive)
  (let* ((issue (gastownd--issue-at-point))
         (event (get-text-property (line-beginning-position) 'gastownd-event))
         (payload (alist-get 'payload event))
         (id (and (consp payload) (alist-get 'session_id payload))))
    (cond (issue (gastownd-who issue))
          ((and (stringp id) (not (string-empty-p id)))
           (gastownd--show-session (gastownd--town-root) id
                                   (and (equal (alist-get 'type event)
                                               "session_end")
                                        "ended")))
          (t (gastownd--notify "no session or issue id on this line")))))

(defun gastownd--trim-lines (limit)
  "Delete the first lines of the current buffer beyond the last LIMIT."
  (let ((excess (- (count-lines (point-min) (point-max)) limit)))
    (when (> excess 0)
      (goto-char (point-min))
      (forward-line excess)
      (delete-region (point-min) (point)))))

(defun gastownd--feed-append (feed lines)
  "Append LINES to FEED's buffer; keep its last `gastownd-feed-lines' lines.
Windows at the end of the buffer stay at its end."
  (let ((buffer (gastownd--feed-buffer feed)))
    (when (and lines (buffer-live-p buffer))
      (with-current-buffer buffer
        (let* ((inhibit-read-only t)
               (end (point-max))
               (following (cl-remove-if-not
                           (lambda (window) (= (window-point window) end))
                           (get-buffer-window-list buffer nil t)))
               (at-end (= (point) end)))
          (when (gastownd--feed-placeholder feed)
            ;; The "waiting" line goes once there is something to show.
            (setf (gastownd--feed-placeholder feed) nil)
            (erase-buffer))
          (save-excursion
            (goto-char (point-max))
            (dolist (line lines) (insert line "\n"))
            (gastownd--trim-lines gastownd-feed-lines))
          (when at-end (goto-char (point-max)))
          (dolist (window following)
            (set-window-point window (point-max))))))))

(defun gastownd--feed-say (feed text)
  "Append TEXT to FEED as a line of the feed's own."
  (gastownd--feed-append feed (list (gastownd--marker text))))

(defun gastownd--feed-cancel-reply-timer (feed)
  "Cancel FEED's reply timer, if there is one."
  (when (gastownd--feed-reply-timer feed)
    (cancel-timer (gastownd--feed-reply-timer feed))
    (setf (gastownd--feed-reply-timer feed) nil)))

(defun gastownd--feed-disconnect (feed)
  "Close FEED's connection; frames still on their way are ignored."
  (cl-incf (gastownd--feed-generation feed))
  (gastownd--feed-cancel-reply-timer feed)
  (gastownd--close (gastownd--feed-process feed))
  (setf (gastownd--feed-process feed) nil))

(defun gastownd--feed-reason (err)
  "What ERR, the end of a feed's connection, means, on one line."
  (if (equal (plist-get err :code) "end")
      "the daemon ended the stream (stopping?)"
    (gastownd--describe "subscribe" err)))

(defun gastownd--feed-retry (feed delay)
  "Reconnect FEED after DELAY seconds."
  (when (gastownd--feed-retry-timer feed)
    (cancel-timer (gastownd--feed-retry-timer feed)))
  (setf (gastownd--feed-retry-timer feed)
        (run-at-time delay nil
                     (lambda ()
                       (when (eq gastownd--the-feed feed)
                         (gastownd--feed-connect feed))))))

(defun gastownd--feed-lost (feed err)
  "FEED lost its connection with ERR.
Say so once per outage, and retry with a doubling delay."
  (gastownd--feed-disconnect feed)
  (if (equal (plist-get err :code) "overflow")
      (progn
        ;; Dropped for falling behind: the last cursor shown loses nothing.
        (gastownd--feed-say
         feed "fell behind the daemon; catching up from the last event shown")
        (gastownd--feed-retry feed 0))
    (unless (gastownd--feed-down feed)
      (setf (gastownd--feed-down feed) t)
      (if (gastownd--feed-ever-up feed)
          (progn
            (gastownd--feed-say
             feed (concat (gastownd--feed-reason err) "; reconnecting"))
            (gastownd--notify
             "the daemon went away; the feed will resume when it is back"))
        (gastownd--notify "%s; the feed will start when it is up"
                          (gastownd--feed-reason err))))
    (let ((delay (gastownd--feed-delay feed)))
      (setf (gastownd--feed-delay feed)
            (min (* 2 delay) gastownd-reconnect-max))
      (gastownd--feed-retry feed delay))))

(defun gastownd--feed-filters (feed message)
  "MESSAGE (a plist) with FEED's filters added."
  (append message
          (when (gastownd--feed-types feed)
            (list :types (vconcat (gastownd--feed-types feed))))
          (when (gastownd--feed-all-nodes feed)
            (list :all_nodes t))))

(defun gastownd--feed-expect-reply (feed)
  "Give up on FEED's connection if the pending reply does not come in time."
  (gastownd--feed-cancel-reply-timer feed)
  (let ((generation (gastownd--feed-generation feed)))
    (setf (gastownd--feed-reply-timer feed)
          (run-at-time
           gastownd-timeout nil
           (lambda ()
             (when (and (eq gastownd--the-feed feed)
                        (= generation (gastownd--feed-generation feed)))
               (gastownd--feed-lost
                feed (list :code "timeout"
                           :message "the daemon did not answer in time"))))))))

(defun gastownd--feed-send (feed message)
  "Send MESSAGE, with FEED's filters, and expect its reply in time."
  (gastownd--feed-expect-reply feed)
  (gastownd--send (gastownd--feed-process feed)
                  (gastownd--feed-filters feed message)))

(defun gastownd--feed-refused (feed id err)
  "The daemon answered request ID of FEED with ERR."
  (cond ((or (not (memql id '(0 1 2 3)))
             (equal (plist-get err :code) "shutting_down"))
         ;; A connection-level error, or a daemon on its way out.
         (gastownd--feed-lost feed err))
        (t
         ;; The daemon refused the feed itself (a bad type name, say):
         ;; retrying cannot help.
         (gastownd--feed-say feed (gastownd--describe "feed" err))
         (gastownd--notify "%s" (gastownd--describe "feed" err))
         (gastownd-feed-stop))))

(defun gastownd--feed-subscribed (feed result)
  "FEED's subscription was answered with RESULT."
  (gastownd--feed-cancel-reply-timer feed)
  ;; A resync on the head cursor the query just gave has nothing to re-read:
  ;; reading again would only ask the same question (and loop).
  (if (and (alist-get 'resync result) (not (gastownd--feed-fresh feed)))
      (progn
        (gastownd--feed-say
         feed (concat "resync: the daemon could not resume after the last "
                      "event shown (the log was replaced or pruned); "
                      "reading the latest events again"))
        (setf (gastownd--feed-cursor feed) nil)
        (gastownd--feed-connect feed))
    (when (and (gastownd--feed-down feed) (gastownd--feed-ever-up feed))
      (gastownd--feed-say feed "reconnected"))
    (setf (gastownd--feed-down feed) nil
          (gastownd--feed-ever-up feed) t
          (gastownd--feed-delay feed) gastownd-reconnect-min)))

(defun gastownd--feed-frame (feed frame)
  "Handle FRAME, received by FEED."
  (let ((push (alist-get 'push frame))
        (id (alist-get 'id frame))
        (result (alist-get 'result frame)))
    (cond
     ((equal push "event")
      (let ((event (alist-get 'event frame)))
        (when (consp event)
          (when (alist-get 'cursor frame)
            (setf (gastownd--feed-cursor feed) (alist-get 'cursor frame)
                  (gastownd--feed-fresh feed) nil))
          (gastownd--saw-type (alist-get 'type event))
          (gastownd--feed-append
           feed (list (gastownd--event-line event (alist-get 'node frame)
                                            (gastownd--feed-local-node feed)))))))
     ((member push '("overflow" "end"))
      (gastownd--feed-lost
       feed (list :code push :message (or (alist-get 'message frame) push))))
     ((not (alist-get 'ok frame))
      (gastownd--feed-refused feed id
                              (gastownd--error-plist (alist-get 'error frame))))
     ((eql id 3)
      ;; This daemon's node: its own events need no @node (a town without
      ;; federation has one node, and every line would say so).
      (setf (gastownd--feed-local-node feed)
            (alist-get 'node (alist-get 'federation result))
            (gastownd--feed-local-node-known feed) t)
      (gastownd--feed-read feed))
     ((eql id 1)
      (let ((events (alist-get 'events result)))
        (when (and (null events) (gastownd--feed-placeholder feed))
          (with-current-buffer (gastownd--feed-buffer feed)
            (let ((inhibit-read-only t))
              (erase-buffer)
              (insert gastownd-feed-empty "\n"))))
        (gastownd--feed-append
         feed (mapcar (lambda (event)
                        (gastownd--saw-type (alist-get 'type event))
                        (gastownd--event-line
                         event nil (gastownd--feed-local-node feed)))
                      (reverse events))))
      (setf (gastownd--feed-cursor feed) (alist-get 'cursor result)
            (gastownd--feed-fresh feed) t)
      (gastownd--feed-subscribe feed))
     ((eql id 2)
      (gastownd--feed-subscribed feed result)))))

(defun gastownd--feed-connect (feed)
  "Connect FEED: read the latest events, then subscribe.
With a cursor, resume the subscription from there instead."
  (gastownd--feed-disconnect feed)
  (let ((generation (gastownd--feed-generation feed)))
    (cl-flet ((current ()
                (and (eq gastownd--the-feed feed)
                     (= generation (gastownd--feed-generation feed)))))
      (gastownd--socket
       (gastownd--feed-root feed)
       (lambda (path err)
         (cond
          ((not (current)))
          (err (gastownd--feed-lost feed err))
          ((setf (gastownd--feed-process feed)
                 (gastownd--open
                  path
                  (lambda (frame)
                    (when (current) (gastownd--feed-frame feed frame)))
                  (lambda (close-error)
                    (when (current) (gastownd--feed-lost feed close-error)))))
           (gastownd--send (gastownd--feed-process feed) (gastownd--hello))
           (if (and (gastownd--feed-all-nodes feed)
                    (not (gastownd--feed-local-node-known feed)))
               ;; Events come tagged with their node: learn this daemon's first.
               (progn
                 (gastownd--feed-expect-reply feed)
                 (gastownd--send (gastownd--feed-process feed)
                                 (list :op "status" :id 3)))
             (gastownd--feed-read feed)))))))))

(defun gastownd--feed-read (feed)
  "Read FEED's latest events (then subscribe), or resume from its cursor."
  (if (gastownd--feed-cursor feed)
      (gastownd--feed-subscribe feed)
    (gastownd--feed-send
     feed (list :op "query" :id 1 :limit gastownd-feed-lines))))

(defun gastownd--feed-subscribe (feed)
  "Subscribe FEED from its cursor."
  (gastownd--feed-send
   feed (list :op "subscribe" :id 2 :cursor (gastownd--feed-cursor feed))))

(defun gastownd-feed-stop ()
  "Stop the feed: close its connection and timers.  Its buffer stays."
  (interactive)
  (let ((feed gastownd--the-feed))
    (when feed
      (setq gastownd--the-feed nil)
      (gastownd--feed-disconnect feed)
      (when (gastownd--feed-retry-timer feed)
        (cancel-timer (gastownd--feed-retry-timer feed))))))

(defun gastownd--feed-killed ()
  "The feed buffer is being killed: stop the feed."
  (when (and gastownd--the-feed
             (eq (gastownd--feed-buffer gastownd--the-feed) (current-buffer)))
    (gastownd-feed-stop)))

(defun gastownd--feed-start (buffer root types all-nodes)
  "Start a feed into BUFFER, emptied, from the town ROOT.
TYPES and ALL-NODES are its filters."
  (gastownd-feed-stop)
  (with-current-buffer buffer
    (let ((inhibit-read-only t))
      (erase-buffer)
      (insert gastownd-feed-waiting "\n"))
    (setq mode-name (gastownd--feed-mode-name types all-nodes))
    (force-mode-line-update)
    (setq gastownd--buffer-town (or root 'default)))
  (setq gastownd--the-feed
        (gastownd--feed-create :buffer buffer :root root :types types
                               :all-nodes all-nodes :placeholder t
                               :delay gastownd-reconnect-min))
  (gastownd--feed-connect gastownd--the-feed))

(defun gastownd--feed-revert (&rest _)
  "Read the latest events again."
  (let ((feed gastownd--the-feed))
    (gastownd--feed-start (current-buffer) (gastownd--town-root)
                          (and feed (gastownd--feed-types feed))
                          (and feed (gastownd--feed-all-nodes feed)))))

;;;###autoload
(defun gastownd-feed (&optional types all-nodes)
  "Show the town's live event feed in the buffer *gastownd-feed*.
TYPES limits it to these event types: a list of strings, each of which may
hold several separated by commas or spaces (\"sling,done\").  An unknown
type is refused with the list of the known ones.  ALL-NODES asks for the
whole town's feed, every machine's.  Interactively, a prefix argument asks
for both, with completion of the types."
  (interactive
   (when current-prefix-arg
     (list (gastownd--read-types)
           (y-or-n-p "Events of all nodes? "))))
  (let ((parsed (gastownd--parse-types types)))
    (if (stringp parsed)
        (progn (gastownd--notify "%s" parsed) nil)
      (let ((root (gastownd--town-root))
            (buffer (get-buffer-create gastownd-feed-buffer-name))
            (feed gastownd--the-feed)
            (all-nodes (and all-nodes t)))
        (with-current-buffer buffer
          (unless (derived-mode-p 'gastownd-feed-mode) (gastownd-feed-mode)))
        (unless (and feed (eq (gastownd--feed-buffer feed) buffer)
                     (equal (gastownd--feed-root feed) root)
                     (equal (gastownd--feed-types feed) parsed)
                     (eq (gastownd--feed-all-nodes feed) all-nodes))
          (gastownd--feed-start buffer root parsed all-nodes))
        (pop-to-buffer-same-window buffer)
        buffer))))

;;;; Sessions

(defconst gastownd-sessions-buffer-name "*gastownd-sessions*"
  "The name of the sessions buffer.")

(defconst gastownd-digest-buffer-name "*gastownd-digest*"
  "The name of the one buffer that shows a session's digest.")

(defconst gastownd--log-limit 500
  "Lines shown of a session known only from the log.")

(defvar gastownd--session-ids nil
  "Session ids seen in the answers to `sessions', for completion.")

(defvar-local gastownd--sessions-rows nil
  "The rows of the sessions buffer, by session id (a hash table).")

(defvar-local gastownd--sessions-state nil
  "The state the sessions buffer shows, or nil for all.")

(defvar-local gastownd--sessions-actor nil
  "The actor substring the sessions buffer shows, or nil for all.")

(defvar-local gastownd--sessions-hide-logged nil
  "Non-nil when the sessions buffer hides the `logged' sessions.")

(defvar-local gastownd--sessions-watch nil
  "The connection that refreshes the sessions buffer on session pushes.")

(defvar gastownd-sessions-mode-map
  (let ((map (make-sparse-keymap)))
    (set-keymap-parent map tabulated-list-mode-map)
    (define-key map (kbd "RET") #'gastownd-sessions-digest)
    (define-key map (kbd "s") #'gastownd-sessions-seance)
    (define-key map (kbd "f") #'gastownd-sessions-cycle-state)
    (define-key map (kbd "a") #'gastownd-sessions-filter-actor)
    (define-key map (kbd "L") #'gastownd-sessions-toggle-logged)
    (define-key map (kbd "w") #'gastownd-sessions-copy-id)
    map)
  "Keymap of `gastownd-sessions-mode'.")

(define-derived-mode gastownd-sessions-mode tabulated-list-mode
  "gastownd-sessions"
  "The sessions of a town, the most recently started first.
\\<gastownd-sessions-mode-map>\\[gastownd-sessions-digest] opens the session
at point: its digest, its wisp while it is open, or what the log knows of it;
\\[gastownd-sessions-seance] resumes it with `gastownctl seance';
\\[revert-buffer] refreshes.
\\[gastownd-sessions-cycle-state] filters by state,
\\[gastownd-sessions-filter-actor] by actor,
\\[gastownd-sessions-toggle-logged] hides the logged ones.
The list refreshes itself when a session starts or ends.

\\{gastownd-sessions-mode-map}"
  (setq tabulated-list-format
        (vector (list "Last start"
                      (length (format-time-string gastownd-date-format 0)) t)
                (list "Session" 8 nil)
                (list "State" 9 t)
                (list "Actor" 28 t)
                (list "Ended"
                      (length (format-time-string gastownd-date-format 0)) t)
                (list "Took" 7 nil)
                (list "End" 17 t)
                (list "Topic" 0 nil)))
  (setq tabulated-list-padding 1)
  (setq-local truncate-lines t)
  (setq-local revert-buffer-function #'gastownd--sessions-refresh)
  (add-hook 'kill-buffer-hook #'gastownd--sessions-unwatch nil t)
  (tabulated-list-init-header))

(defun gastownd--duration (seconds)
  "SECONDS as 42s, 3m 5s, 2h 10m or 3d 4h."
  (let* ((seconds (floor seconds))
         (days (/ seconds 86400)) (hours (/ (% seconds 86400) 3600))
         (minutes (/ (% seconds 3600) 60)) (secs (% seconds 60)))
    (cond ((> days 0) (format "%dd %dh" days hours))
          ((> hours 0) (format "%dh %dm" hours minutes))
          ((> minutes 0) (format "%dm %ds" minutes secs))
          (t (format "%ds" secs)))))

(defun gastownd--took (start end)
  "The time from START to END (timestamps), or \"\"."
  (let ((from (and (stringp start) (ignore-errors (parse-iso8601-time-string start))))
        (to (and (stringp end) (ignore-errors (parse-iso8601-time-string end)))))
    (if (and from to)
        (gastownd--duration (max 0 (float-time (time-subtract to from))))
      "")))

(defun gastownd--state-face (state)
  "The face of the session STATE."
  (pcase state
    ("open" 'gastownd-state-open)
    ("squashed" 'gastownd-state-squashed)
    ("abandoned" 'gastownd-state-abandoned)
    (_ 'gastownd-state-logged)))

(defun gastownd--session-entry (row)
  "A `tabulated-list-entries' entry for ROW, a session, by its id.
The list is sorted by the last start, which is what it shows.  A session
that ran on another node shows it: actor@node."
  (let ((started (or (alist-get 'last_started_at row)
                     (alist-get 'started_at row)))
        (ended (alist-get 'ended_at row)))
    (list (alist-get 'session_id row)
          (vector (gastownd--face (gastownd--local-time started
                                                        gastownd-date-format)
                                  'gastownd-time)
                  (gastownd--face (gastownd--short-id (alist-get 'session_id row))
                                  'gastownd-id)
                  (gastownd--face (or (alist-get 'state row) "?")
                                  (gastownd--state-face (alist-get 'state row)))
                  (gastownd--face (gastownd--who (alist-get 'actor row)
                                                 (gastownd--remote-node row))
                                  'gastownd-actor)
                  (if ended
                      (gastownd--face (gastownd--local-time ended
                                                            gastownd-date-format)
                                      'gastownd-time)
                    "")
                  (gastownd--took started ended)
                  (or (alist-get 'end_reason row) "")
                  (gastownd--short (gastownd--about row))))))

(defun gastownd--about (row)
  "What the sessions ROW is about: its topic, or its digest's summary line.
For an open session, what it has changed so far comes first."
  (let ((about (or (alist-get 'topic row) (alist-get 'summary row) ""))
        (changed (alist-get 'changed row)))
    (if (and changed (not (string-empty-p changed)))
        (concat changed (if (string-empty-p about) "" (concat " · " about)))
      about)))

(defun gastownd--changes (wisp)
  "An open session's changes so far, from its WISP: \"2 steps: closed gt-1\"."
  (let ((count (or (alist-get 'step_count wisp) (length (alist-get 'steps wisp))))
        parts)
    (dolist (step (alist-get 'steps wisp))
      (let ((verb (cdr (assoc (alist-get 'kind step)
                              '(("issue_closed" . "closed")
                                ("issue_created" . "created")
                                ("issue_reopened" . "reopened")
                                ("commit" . "commit")))))
            (ref (alist-get 'ref step)))
        (when (and verb (stringp ref))
          (cl-pushnew (concat verb " " ref) parts :test #'equal))))
    (if (= count 0)
        ""
      (concat (format "%d step%s" count (if (= count 1) "" "s"))
              (when parts (concat ": " (string-join (nreverse parts) ", ")))))))

(defconst gastownd--open-changes 20
  "Open sessions whose changes the sessions buffer asks for (one wisp each).")

(defun gastownd--sessions-annotate (buffer rows)
  "Ask for the wisps of the open ROWS of BUFFER, and show their changes."
  (let ((asked 0))
    (dolist (row rows)
      (when (and (equal (alist-get 'state row) "open")
                 (< asked gastownd--open-changes))
        (cl-incf asked)
        (gastownd--request
         (with-current-buffer buffer (gastownd--town-root))
         "wisp" (list :session (alist-get 'session_id row))
         (lambda (wisp _err)
           (when (and wisp (buffer-live-p buffer))
             (with-current-buffer buffer
               (let ((shown (gethash (alist-get 'session_id row)
                                     gastownd--sessions-rows)))
                 (when (eq shown row)
                   (setcdr (last row) (list (cons 'changed (gastownd--changes wisp))))
                   (setq tabulated-list-entries
                         (mapcar (lambda (entry)
                                   (if (equal (car entry) (alist-get 'session_id row))
                                       (gastownd--session-entry row)
                                     entry))
                                 tabulated-list-entries))
                   (tabulated-list-print t)))))))))))

(defun gastownd--sessions-mode-name ()
  "The sessions buffer's mode name, which shows its filters."
  (let ((filters (delq nil (list (and gastownd--sessions-state
                                      (concat "state=" gastownd--sessions-state))
                                 (and gastownd--sessions-actor
                                      (concat "actor=" gastownd--sessions-actor))
                                 (and gastownd--sessions-hide-logged
                                      "logged hidden")))))
    (concat "gastownd-sessions"
            (when filters (format "[%s]" (string-join filters " "))))))

(defun gastownd--sessions-show (result err)
  "Show RESULT, the answer to `sessions', or ERR in the current buffer.
Point stays on its session (the entries are keyed by session id)."
  (setq mode-name (gastownd--sessions-mode-name))
  (force-mode-line-update)
  (if (not err)
      (let* ((all (alist-get 'sessions result))
             (rows (if gastownd--sessions-hide-logged
                       (cl-remove-if (lambda (row)
                                       (equal (alist-get 'state row) "logged"))
                                     all)
                     all)))
        (setq gastownd--sessions-rows (make-hash-table :test #'equal))
        (dolist (row all)
          (cl-pushnew (alist-get 'session_id row) gastownd--session-ids
                      :test #'equal))
        (dolist (row rows)
          (puthash (alist-get 'session_id row) row gastownd--sessions-rows))
        (setq tabulated-list-entries (mapcar #'gastownd--session-entry rows))
        (tabulated-list-print t)
        (gastownd--sessions-annotate (current-buffer) rows))
    (setq tabulated-list-entries nil)
    (tabulated-list-print)
    (let ((inhibit-read-only t))
      (insert "-- " (gastownd--describe "sessions" err) "\n"))
    (gastownd--notify "%s" (gastownd--describe "sessions" err))))

(defun gastownd--sessions-refresh (&rest _)
  "Fetch the sessions again, asynchronously (every node's, when federated)."
  (let ((buffer (current-buffer)))
    (gastownd--request
     (gastownd--town-root) "sessions"
     (append (list :limit gastownd-sessions-limit)
             (when gastownd--sessions-state (list :state gastownd--sessions-state))
             ;; `role' filters on a substring of the actor.
             (when gastownd--sessions-actor (list :role gastownd--sessions-actor)))
     (lambda (result err)
       (when (buffer-live-p buffer)
         (with-current-buffer buffer
           (gastownd--sessions-show result err)))))))

(defun gastownd-sessions-cycle-state ()
  "Show the sessions of the next state: all, open, squashed, abandoned, logged."
  (interactive)
  (setq gastownd--sessions-state
        (cadr (member gastownd--sessions-state
                      '(nil "open" "squashed" "abandoned" "logged" nil))))
  (gastownd--sessions-refresh))

(defun gastownd-sessions-filter-actor (actor)
  "Show only the sessions whose actor contains ACTOR (blank: all)."
  (interactive (list (read-string "Actor (blank for all): "
                                  gastownd--sessions-actor)))
  (setq gastownd--sessions-actor (unless (string-empty-p actor) actor))
  (gastownd--sessions-refresh))

(defun gastownd-sessions-toggle-logged ()
  "Hide or show the sessions known only from the log."
  (interactive)
  (setq gastownd--sessions-hide-logged (not gastownd--sessions-hide-logged))
  (gastownd--sessions-refresh))

(defun gastownd-sessions-copy-id ()
  "Copy the full id of the session at point to the kill ring."
  (interactive)
  (let ((row (gastownd--session-at-point)))
    (when row
      (kill-new (alist-get 'session_id row))
      (message "%s" (alist-get 'session_id row)))))

(defun gastownd--sessions-unwatch ()
  "Stop refreshing this sessions buffer on pushes."
  (when (processp gastownd--sessions-watch)
    (gastownd--close gastownd--sessions-watch))
  (setq gastownd--sessions-watch nil))

(defun gastownd--sessions-watch (buffer root)
  "Refresh BUFFER when a session of ROOT starts or ends, while it lives.
A subscription of its own to session_start and session_end; it reconnects
a second after it drops."
  (with-current-buffer buffer
    (unless gastownd--sessions-watch
      (setq gastownd--sessions-watch 'connecting)
      (let ((pending nil))
        (gastownd--socket
         root
         (lambda (path err)
           (when (buffer-live-p buffer)
             (with-current-buffer buffer
               (if err
                   (setq gastownd--sessions-watch nil)
                 (let ((process
                        (gastownd--open
                         path
                         (lambda (frame)
                           (when (and (equal (alist-get 'push frame) "event")
                                      (not pending) (buffer-live-p buffer))
                             (setq pending t)
                             (run-at-time
                              0.1 nil
                              (lambda ()
                                (setq pending nil)
                                (when (buffer-live-p buffer)
                                  (with-current-buffer buffer
                                    (gastownd--sessions-refresh)))))))
                         (lambda (_err)
                           (when (buffer-live-p buffer)
                             (with-current-buffer buffer
                               (setq gastownd--sessions-watch nil))
                             (run-at-time
                              1 nil
                              (lambda ()
                                (when (buffer-live-p buffer)
                                  (gastownd--sessions-watch buffer root)))))))))
                   (setq gastownd--sessions-watch process)
                   (when process
                     (gastownd--send process (gastownd--hello))
                     (gastownd--send
                      process
                      (list :op "subscribe" :id 1 :all_nodes t
                            :types ["session_start" "session_end"])))))))))))))

;;;###autoload
(defun gastownd-sessions ()
  "List the town's sessions in the buffer *gastownd-sessions*.
In a federated town, every node's."
  (interactive)
  (let ((root (gastownd--town-root))
        (buffer (get-buffer-create gastownd-sessions-buffer-name)))
    (with-current-buffer buffer
      (unless (derived-mode-p 'gastownd-sessions-mode)
        (gastownd-sessions-mode))
      (setq gastownd--buffer-town (or root 'default))
      (gastownd--sessions-refresh)
      (gastownd--sessions-watch buffer root))
    (pop-to-buffer-same-window buffer)
    buffer))

(defun gastownd--session-at-point ()
  "The session row at point, or nil after saying there is none."
  (or (and gastownd--sessions-rows
           (gethash (tabulated-list-get-id) gastownd--sessions-rows))
      (progn (gastownd--notify "no session on this line") nil)))

(defun gastownd--digest-text (digest)
  "DIGEST (an alist) as text: its title, then its summary."
  (concat "# " (or (alist-get 'title digest)
                   (format "Digest: %s" (alist-get 'session_id digest)))
          "\n\ndigest " (or (alist-get 'digest_id digest) "?")
          (if (gastownd--remote-node digest)
              (concat ", node " (alist-get 'node digest))
            "")
          "\n\n" (string-trim-right (or (alist-get 'summary digest) ""))
          "\n"))

(defun gastownd--step-line (number step)
  "Return STEP as line NUMBER of a wisp's step list."
  (format "%d. **[%s]** %s %s\n" number (alist-get 'kind step)
          (or (alist-get 'at step) "")
          (or (alist-get 'ref step)
              (gastownd--summary (alist-get 'payload step)))))

(defun gastownd--wisp-text (wisp)
  "WISP (an alist), an open session with no digest yet, as text."
  (let ((steps (alist-get 'steps wisp)))
    (concat
     (format "# Open session %s\n\n" (alist-get 'session_id wisp))
     (format "no digest yet: the session is still open (segment %s)\n\n"
             (or (alist-get 'segment wisp) 1))
     (format "**Actor**: %s\n**Topic**: %s\n" (alist-get 'actor wisp)
             (or (alist-get 'topic wisp) ""))
     (format "**Started**: %s\n**Last activity**: %s\n"
             (alist-get 'started_at wisp) (alist-get 'last_activity_at wisp))
     (format "**Steps**: %s\n\n" (or (alist-get 'step_count wisp)
                                     (length steps)))
     (string-join (cl-loop for step in steps
                           for number from 1
                           collect (gastownd--step-line number step))))))

(defun gastownd--log-text (id row events)
  "What the log knows of session ID: its sessions ROW and its EVENTS."
  (concat
   (format "# Logged session %s\n\n" id)
   "known only from gt's lines in the log: no wisp, no digest\n\n"
   (mapconcat (lambda (fact)
                (if (cdr fact) (format "**%s**: %s\n" (car fact) (cdr fact)) ""))
              (list (cons "Actor" (alist-get 'actor row))
                    (cons "First start" (alist-get 'started_at row))
                    (cons "Last start" (alist-get 'last_started_at row))
                    (cons "Starts" (alist-get 'starts row))
                    (cons "Ended" (alist-get 'ended_at row))
                    (cons "End" (alist-get 'end_reason row))
                    (cons "Topic" (alist-get 'topic row)))
              "")
   (format "\n## %d line%s\n\n" (length events) (if (= 1 (length events)) "" "s"))
   (mapconcat (lambda (event) (concat (gastownd--event-line event) "\n"))
              events "")))

(defvar-local gastownd--refresh-function nil
  "What \\[revert-buffer] does in a digest or who buffer.")

(defvar gastownd-view-mode-map
  (let ((map (make-sparse-keymap)))
    (set-keymap-parent map special-mode-map)
    (define-key map (kbd "RET") #'gastownd-view-enter)
    map)
  "Keymap of `gastownd-view-mode'.")

(define-derived-mode gastownd-view-mode special-mode "gastownd"
  "A digest, a wisp, a session's log lines, or who touched an issue.
\\<gastownd-view-mode-map>\\[revert-buffer] asks the daemon again;
\\[gastownd-view-enter] on a who line opens its session, on an issue id
shows who touched it.

\\{gastownd-view-mode-map}"
  (setq-local truncate-lines t)
  (setq-local revert-buffer-function
              (lambda (&rest _)
                (if gastownd--refresh-function
                    (funcall gastownd--refresh-function)
                  (gastownd--notify "nothing to refresh here")))))

(defun gastownd-view-enter ()
  "On a who line, open its session; on an issue id, show who touched it."
  (interactive)
  (let ((record (get-text-property (line-beginning-position) 'gastownd-record))
        (event (get-text-property (line-beginning-position) 'gastownd-event))
        (issue (gastownd--issue-at-point)))
    (cond (record
           (gastownd--show-session (gastownd--town-root)
                                   (alist-get 'session_id record)
                                   (if (alist-get 'digest_id record) "ended" "open")))
          (issue (gastownd-who issue))
          ((and event (consp (alist-get 'payload event))
                (alist-get 'session_id (alist-get 'payload event)))
           (gastownd--show-session (gastownd--town-root)
                                   (alist-get 'session_id (alist-get 'payload event))
                                   nil))
          (t (gastownd--notify "nothing to open on this line")))))

(defun gastownd--show-text (name text root &optional refresh)
  "Show TEXT, read-only, in the buffer NAME, for the town ROOT.
REFRESH, a function, is what \\[revert-buffer] does there."
  (let ((buffer (get-buffer-create name)))
    (with-current-buffer buffer
      (unless (derived-mode-p 'gastownd-view-mode) (gastownd-view-mode))
      (let ((inhibit-read-only t))
        (erase-buffer)
        (insert text)
        (goto-char (point-min)))
      (setq gastownd--refresh-function refresh)
      (setq gastownd--buffer-town (or root 'default)))
    buffer))

(defun gastownd--show-session (root id hint &optional row)
  "Show session ID of ROOT in the digest buffer.
HINT is its state if known (\"open\", \"logged\", else ended), ROW its
sessions row.  An ended session shows its digest, an open one its wisp, and
one with neither what the log knows of it (its lines, by a query)."
  (let ((refresh (lambda () (gastownd--show-session root id hint row))))
    (cl-labels
        ((show (text)
           (pop-to-buffer-same-window
            (gastownd--show-text gastownd-digest-buffer-name text root refresh)))
         (log ()
           (gastownd--request
            ;; :archive: an old session's lines may have been pruned.
            root "query" (list :session id :limit gastownd--log-limit
                               :oldest_first t :archive t)
            (lambda (result err)
              (if err
                  (gastownd--notify "%s" (gastownd--describe "query" err))
                (show (gastownd--log-text id row (alist-get 'events result)))))))
         (ask (op fields render fallback)
           (gastownd--request
            root op fields
            (lambda (result err)
              (cond ((and err fallback (equal (plist-get err :code) "not_found"))
                     (funcall fallback))
                    (err (gastownd--notify "%s" (gastownd--describe op err)))
                    (t (show (funcall render result)))))))
         (wisp (fallback)
           (ask "wisp" (list :session id) #'gastownd--wisp-text fallback))
         (digest (fallback)
           (ask "digest" (list :ref id) #'gastownd--digest-text fallback)))
      (pcase hint
        ("logged" (log))
        ("open" (wisp (lambda () (digest #'log))))
        (_ (digest (lambda () (wisp #'log))))))))

(defun gastownd-sessions-digest ()
  "Open the session at point in the digest buffer.
Its digest; for an open session, its wisp so far; for a session known only
from the log, its lines there.  On an issue id, show who touched it."
  (interactive)
  (let ((issue (gastownd--issue-at-point)))
    (if issue
        (gastownd-who issue)
      (let ((row (gastownd--session-at-point)))
        (when row
          (gastownd--show-session (gastownd--town-root)
                                  (alist-get 'session_id row)
                                  (alist-get 'state row) row))))))

;;;###autoload
(defun gastownd-digest (id)
  "Open session ID (or a unique prefix) in the digest buffer.
Interactively, with completion of the session ids seen so far."
  (interactive
   (list (completing-read "Session: " gastownd--session-ids nil nil)))
  (gastownd--show-session (gastownd--town-root) id nil))

(defun gastownd-sessions-seance ()
  "Resume the session at point with `gastownctl seance', in a terminal."
  (interactive)
  (let ((row (gastownd--session-at-point))
        (root (gastownd--town-root)))
    (when row
      (require 'term)
      (let* ((id (alist-get 'session_id row))
             (command (append gastownd-gastownctl-command
                              (when root (list "--town-root" root))
                              (list "seance" id)))
             (default-directory (gastownd--local-directory)))
        (condition-case err
            (let ((buffer (apply #'make-term
                                 (format "gastownd-seance %s"
                                         (gastownd--short-id id))
                                 (car command) nil (cdr command))))
              (with-current-buffer buffer
                (term-mode)
                (term-char-mode))
              (pop-to-buffer buffer)
              buffer)
          (error (gastownd--notify "cannot run the seance: %s"
                                   (error-message-string err))))))))

;;;; Who

(defconst gastownd-who-buffer-name "*gastownd-who*"
  "The name of the buffer `gastownd-who' answers in.")

;;;###autoload
(defun gastownd-who (issue)
  "Show which sessions closed, created or updated ISSUE.
Interactively, ISSUE is the Beads id at point; with a prefix argument, or
with no id at point, it is asked for."
  (interactive
   (let ((at (gastownd--issue-at-point)))
     (list (if (and at (not current-prefix-arg))
               at
             (read-string (format-prompt "Issue" at) nil nil at)))))
  (if (or (null issue) (string-empty-p issue))
      (gastownd--notify "no issue id at point (like gt-a1b2)")
    (let ((root (gastownd--town-root)))
      (gastownd--request
       root "attribution" (list :issue issue)
       (lambda (result err)
         (if err
             (gastownd--notify "%s" (gastownd--describe "attribution" err))
           (display-buffer
            (gastownd--show-text
             gastownd-who-buffer-name
             (concat (string-join
                      (gastownd--attribution-lines
                       (or (alist-get 'issue result) issue)
                       (alist-get 'records result))
                      "\n")
                     "\n")
             root
             (lambda ()
               (let ((default-directory (or root default-directory)))
                 (gastownd-who issue)))))))))))

;;;; Mode line

(defvar gastownd--mode-line-string ""
  "What `gastownd-mode-line-mode' shows.
\" gastownd: 2 open\", or \" gastownd: down\" when the daemon is not running.")

(defvar gastownd--mode-line-timer nil
  "The timer refreshing `gastownd--mode-line-string'.")

(defvar gastownd--mode-line-busy nil
  "Non-nil while a refresh of the mode line is on its way.")

(defconst gastownd--open-limit 1000
  "Open sessions counted at most by the mode line.")

(defun gastownd--mode-line-text (result err)
  "The mode line's text for RESULT, the answer to `sessions', or ERR."
  (let ((code (plist-get err :code)))
    (cond ((null err)
           (let ((open (length (alist-get 'sessions result))))
             (format " gastownd: %d%s open" open
                     (if (>= open gastownd--open-limit) "+" ""))))
          ((equal code "unavailable") " gastownd: down")
          ((equal code "timeout") " gastownd: no answer")
          (t " gastownd: ?"))))

(defun gastownd--mode-line-refresh ()
  "Count the open sessions of the selected window's town, asynchronously."
  (unless gastownd--mode-line-busy
    (setq gastownd--mode-line-busy t)
    (gastownd--request
     (with-current-buffer (window-buffer (selected-window))
       (gastownd--town-root))
     ;; :local: this daemon's own wisps, not other nodes' in a federated town.
     "sessions" (list :state "open" :limit gastownd--open-limit :local t)
     (lambda (result err)
       (setq gastownd--mode-line-busy nil)
       (let ((text (gastownd--mode-line-text result err)))
         (unless (equal text gastownd--mode-line-string)
           (setq gastownd--mode-line-string text)
           (force-mode-line-update t)))))))

;;;###autoload
(define-minor-mode gastownd-mode-line-mode
  "Show the daemon's state and its open sessions in the mode line.
The text is refreshed every `gastownd-mode-line-interval' seconds,
asynchronously."
  :global t
  :group 'gastownd
  (when gastownd--mode-line-timer
    (cancel-timer gastownd--mode-line-timer)
    (setq gastownd--mode-line-timer nil))
  (setq global-mode-string
        (delq 'gastownd--mode-line-string (or global-mode-string (list ""))))
  (when gastownd-mode-line-mode
    (setq global-mode-string
          (append global-mode-string (list 'gastownd--mode-line-string)))
    (setq gastownd--mode-line-busy nil)
    (setq gastownd--mode-line-timer
          (run-at-time 0 gastownd-mode-line-interval
                       #'gastownd--mode-line-refresh))))

(provide 'gastownd)
;;; gastownd.el ends here
